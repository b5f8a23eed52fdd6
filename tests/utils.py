"""Former home of the test builders, now in tests/support: these names stay importable from here
for test files written against it (new code imports from tests.support)."""

from tests.support.api import ADMIN as ADMIN
from tests.support.api import APP as APP
from tests.support.api import bearer as bearer
from tests.support.api import eventually as eventually
from tests.support.data import add_agent as add_agent
from tests.support.data import enqueue_conversations as enqueue_conversations
from tests.support.data import new_conversation as new_conversation
from tests.support.policy import write_policy as write_policy
from tests.support.system import System as System
