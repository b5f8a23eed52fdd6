"""docker-compose.yml checked against the code, statically: no Docker engine runs here.

What each group guards:
- structure: the services a production stack needs, every `depends_on` target and condition,
  start order, named volumes and configs, restart policies, no stray compose interpolation;
- settings: every field of `settings.Settings` set for the API and the worker, no SWITCHBOARD_*
  variable that is not one, secrets required, and the environment they get validates as
  production (database, Temporal address, policy path checked against the other services);
- search attributes: the one-shot step registers exactly `domain.types.SEARCH_ATTRIBUTES`;
- ports and images: pinned images, the API's port, Temporal's address and database settings,
  a scalable worker, and a Dockerfile that copies every module pyproject.toml installs;
- attachments: the API's and the worker's S3 settings point at the object-store service, whose
  keys are theirs, and the one-shot bucket step creates their bucket with their settings;
- and, where a `docker compose` (v2) binary exists, compose's own `config` validation.
"""

from __future__ import annotations

import base64
import glob
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url
from temporalio.common import SearchAttributeKey

import settings as settings_module
from domain.types import SEARCH_ATTRIBUTES
from settings import LAUNCHER_ONLY, S3Location, Settings, parse_attachments_url

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
PREFIX = "SWITCHBOARD_"
IMAGE_WORKDIR = "/app"  # the Dockerfile's WORKDIR (checked below)

Service = dict[str, Any]

# --- reading the compose file the way compose does ----------------------------------------------

_REFERENCE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)


class MissingVariable(Exception):
    """A `${NAME:?message}` whose variable is unset: compose refuses to start."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME-default},
    ${NAME:?error}, ${NAME?error}, ${NAME:+alternative}, ${NAME+alternative}."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise ValueError(f"compose cannot read ${{{match['braced']}}}")
        name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
        value = env.get(name)
        if op is None:
            return value or ""
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return arg if unset else str(value)
        if op.endswith("?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return "" if unset else arg  # the + forms

    return _REFERENCE.sub(substitute, text)


def required_variables(text: str) -> set[str]:
    """Names compose insists on (`${NAME:?…}` or `${NAME?…}`)."""
    return set(re.findall(r"\$\{([A-Za-z_]\w*):?\?", text))


def dummy_environment() -> dict[str, str]:
    """A value for every required variable: 32 URL-safe characters, none a development secret
    (the payload key: 32 bytes in base64, as an AES-256 key is written)."""
    names = required_variables(COMPOSE_FILE.read_text())
    dummies = {
        name: (name.lower().replace("_", "") + "0123456789abcdef" * 2)[:32] for name in names
    }
    if "SWITCHBOARD_PAYLOAD_KEY" in dummies:
        key = dummies["SWITCHBOARD_PAYLOAD_KEY"].encode()
        dummies["SWITCHBOARD_PAYLOAD_KEY"] = base64.b64encode(key).decode()
    return dummies


def environment(service: Service) -> dict[str, str]:
    """A service's environment as NAME → raw (uninterpolated) text."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in raw)
        return {name: value for name, value in pairs}
    return {name: "" if value is None else str(value) for name, value in raw.items()}


def resolved_environment(service: Service) -> dict[str, str]:
    dummies = dummy_environment()
    return {name: interpolate(value, dummies) for name, value in environment(service).items()}


def words(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


def script(service: Service) -> str:
    """The shell script a one-shot service runs (`entrypoint: [sh, -euc]` + the command), with
    compose's `$$` unescaped to what the shell sees."""
    return "\n".join(words(service.get("command"))).replace("$$", "$")


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def published_ports(service: Service) -> list[tuple[str | None, int]]:
    """(host port or None when compose picks one, container port) for each published port."""
    result: list[tuple[str | None, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, Mapping):
            published = entry.get("published")
            result.append((str(published) if published else None, int(entry["target"])))
            continue
        spec = str(entry).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:
            result.append((None, int(parts[0])))
        else:
            result.append((parts[-2] or None, int(parts[-1])))
    return result


def depends_on(service: Service) -> dict[str, str]:
    """Target → condition (the short list form means service_started)."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def settings_env_names() -> dict[str, str]:
    """Environment variable → Settings field, for every field the code reads."""
    names = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names[(alias or PREFIX + field_name).upper()] = field_name
    return names


def secret_fields() -> set[str]:
    """Fields holding secrets: named like one, or defaulting to a development secret."""
    dev_secrets = {
        value
        for name, value in vars(settings_module).items()
        if name.startswith("DEV_") and isinstance(value, str)
    }
    return {
        name
        for name, field in Settings.model_fields.items()
        if re.search(r"token|key|secret|password", name)
        or (isinstance(field.default, str) and field.default in dev_secrets)
    }


# --- the file, and the services by role ------------------------------------------------------


@pytest.fixture
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), "docker-compose.yml is not a YAML mapping"
    return document


@pytest.fixture
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml has no services"
    return found


def image_name(service: Service) -> str:
    return str(service.get("image", "")).split("@")[0].rsplit(":", 1)[0]


def image_tag(service: Service) -> str:
    image = str(service.get("image", "")).split("@")[0]
    name, _, tag = image.rpartition(":")
    return tag if name and "/" not in tag else ""


def one(services: Mapping[str, Service], what: str, test: Any) -> tuple[str, Service]:
    matches = [(name, service) for name, service in services.items() if test(service)]
    assert len(matches) == 1, f"expected exactly one {what}, found {[n for n, _ in matches]}"
    return matches[0]


def postgres(services: Mapping[str, Service]) -> tuple[str, Service]:
    return one(services, "PostgreSQL service", lambda s: image_name(s) == "postgres")


def temporal_server(services: Mapping[str, Service]) -> tuple[str, Service]:
    return one(services, "Temporal server", lambda s: image_name(s) == "temporalio/server")


def temporal_ui(services: Mapping[str, Service]) -> tuple[str, Service]:
    return one(services, "Temporal UI", lambda s: image_name(s) == "temporalio/ui")


def schema_step(services: Mapping[str, Service]) -> tuple[str, Service]:
    return one(services, "schema step", lambda s: "temporal-sql-tool" in script(s))


def search_attribute_step(services: Mapping[str, Service]) -> tuple[str, Service]:
    return one(services, "search-attribute step", lambda s: "search-attribute create" in script(s))


def app_services(services: Mapping[str, Service]) -> Iterator[tuple[str, Service]]:
    for name in ("api", "worker"):
        assert name in services, f"docker-compose.yml has no `{name}` service"
        yield name, services[name]


def object_store(services: Mapping[str, Service]) -> tuple[str, Service]:
    """The S3-compatible store: the service the API's SWITCHBOARD_S3_ENDPOINT_URL names."""
    endpoint = resolved_environment(services["api"]).get(PREFIX + "S3_ENDPOINT_URL", "")
    host = urlsplit(endpoint).hostname
    assert host in services, f"SWITCHBOARD_S3_ENDPOINT_URL {endpoint!r} names no service"
    return host, services[host]


def bucket_step(services: Mapping[str, Service]) -> tuple[str, Service]:
    return one(services, "bucket step", lambda s: "create-bucket" in words(s.get("command")))


ONE_SHOTS = (schema_step, search_attribute_step)
DAEMONS = (postgres, temporal_server, temporal_ui, object_store)


# --- (a) structure -----------------------------------------------------------------------------


def test_top_level_keys_and_services_are_valid(compose: dict[str, Any]) -> None:
    allowed = {"name", "services", "volumes", "configs", "secrets", "networks", "include"}
    unknown = {key for key in compose if key not in allowed and not str(key).startswith("x-")}
    assert not unknown, f"unknown top-level keys (typo?): {sorted(unknown)}"
    assert "version" not in compose, "`version` is obsolete in the compose spec"
    for name, service in compose["services"].items():
        assert isinstance(service, dict), f"service {name} is not a mapping"
        assert "image" in service or "build" in service, f"service {name} has no image or build"
        raw_environment = service.get("environment") or {}
        if not isinstance(raw_environment, Mapping):
            continue  # the NAME=value list form is text already
        for variable, value in raw_environment.items():
            assert isinstance(value, str | int | float) and not isinstance(value, bool), (
                f"{name}: environment {variable} must be a string (quote it), got {value!r}"
            )


def test_every_role_of_the_stack_is_there(services: dict[str, Service]) -> None:
    for role in (*DAEMONS, *ONE_SHOTS, bucket_step):
        role(services)
    for name, service in app_services(services):
        assert "build" in service, f"{name} must be built from our Dockerfile"


def test_depends_on_targets_exist_with_valid_conditions(services: dict[str, Service]) -> None:
    valid = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name, f"{name} depends on itself"
            assert condition in valid, f"{name} → {target}: unknown condition {condition}"
            if condition == "service_healthy":
                check = services[target].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {target} to be healthy, but {target} has no health check"
                )
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", (
                    f"{name} waits for {target} to complete, but {target} restarts"
                )

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' → '.join((*path, name))}"
        for target in depends_on(services[name]):
            visit(target, (*path, name))

    for name in services:
        visit(name, ())


def test_start_order(services: dict[str, Service]) -> None:
    """Schema before server, server before registration, registration before our processes;
    the object store before its bucket, the bucket before our processes."""
    db, _ = postgres(services)
    server, _ = temporal_server(services)
    schema, schema_service = schema_step(services)
    register, register_service = search_attribute_step(services)
    store, _ = object_store(services)
    bucket, bucket_service = bucket_step(services)
    expected: list[tuple[Service, str, str, str]] = [
        (schema_service, schema, db, "service_healthy"),
        (services[server], server, schema, "service_completed_successfully"),
        (register_service, register, server, "service_healthy"),
        (bucket_service, bucket, store, "service_healthy"),
    ]
    for name, service in app_services(services):
        expected.append((service, name, db, "service_healthy"))
        expected.append((service, name, register, "service_completed_successfully"))
        expected.append((service, name, bucket, "service_completed_successfully"))
    for service, name, target, condition in expected:
        assert depends_on(service).get(target) == condition, (
            f"{name} must depend on {target} with condition {condition}"
        )
    ui, ui_service = temporal_ui(services)
    assert server in depends_on(ui_service), f"{ui} must depend on {server}"


def test_named_volumes_configs_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared_volumes = set(compose.get("volumes") or {})
    declared_configs = compose.get("configs") or {}
    for name, service in compose["services"].items():
        for mount in service.get("volumes") or []:
            if isinstance(mount, Mapping):
                kind, source = mount.get("type"), str(mount.get("source", ""))
            else:
                source = str(mount).split(":")[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "volume" and source:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
            if kind == "bind" and source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: bind mount source {source} is missing"
        for config in service.get("configs") or []:
            source = config["source"] if isinstance(config, Mapping) else config
            assert source in declared_configs, f"{name}: config {source} is not declared"
    for name, config in declared_configs.items():
        kinds = {"file", "content", "environment", "external"} & set(config or {})
        assert len(kinds) == 1, f"config {name} needs exactly one of file/content/environment"


def test_one_shots_run_once_and_daemons_come_back(services: dict[str, Service]) -> None:
    for role in ONE_SHOTS:
        name, service = role(services)
        assert service.get("restart") == "no", f'one-shot {name} must have restart: "no"'
        shell, *flags = words(service.get("entrypoint")) or [""]
        assert shell == "sh" and flags and re.fullmatch(r"-\w*e\w*c", flags[0]), (
            f"{name}: run the script with `sh -euc` so it stops at the first failing command"
        )
    daemons = [role(services) for role in DAEMONS] + list(app_services(services))
    for name, service in daemons:
        assert service.get("restart") in {"always", "unless-stopped"}, (
            f"{name} must come back after a crash or reboot (restart: unless-stopped)"
        )


def test_commands_have_no_compose_interpolation(services: dict[str, Service]) -> None:
    """A lone `$` in a command is substituted by compose from the host, not by the shell."""
    for name, service in services.items():
        texts = words(service.get("command")) + words(service.get("entrypoint"))
        texts += words((service.get("healthcheck") or {}).get("test"))
        for text in texts:
            assert "$" not in text.replace("$$", ""), (
                f"{name}: write $$ for the shell's $ in {text[:60]!r}…"
            )


# --- (b) settings --------------------------------------------------------------------------------


def test_every_setting_is_set_for_the_api_and_the_worker(services: dict[str, Service]) -> None:
    """Explicit beats a development default in a container: a new Settings field fails here
    until docker-compose.yml sets it."""
    wanted = [env for env, field in settings_env_names().items() if field not in LAUNCHER_ONLY]
    for name, service in app_services(services):
        missing = sorted(set(wanted) - set(environment(service)))
        assert not missing, f"{name} does not set {missing} (add them to x-switchboard-env)"


def test_no_switchboard_variable_that_the_code_does_not_read(
    services: dict[str, Service],
) -> None:
    known = settings_env_names()
    for name, service in services.items():
        unknown = sorted(
            variable
            for variable in environment(service)
            if variable.upper().startswith(PREFIX) and variable.upper() not in known
        )
        assert not unknown, f"{name} sets {unknown}, which no Settings field reads (typo?)"


def test_secrets_are_required_and_never_written_down(services: dict[str, Service]) -> None:
    secrets = secret_fields()
    assert {"admin_token", "app_key", "secret_key"} <= secrets
    by_field = {field: variable for variable, field in settings_env_names().items()}
    for name, service in app_services(services):
        env = environment(service)
        for field in sorted(secrets):
            value = env.get(by_field[field], "")
            assert re.fullmatch(r"\$\{[A-Za-z_]\w*:?\?[^}]*\}", value), (
                f"{name}: {by_field[field]} must be `${{VAR:?message}}` (required, no default), "
                f"not {value!r}"
            )
            with pytest.raises(MissingVariable):
                interpolate(value, {})
    _, db = postgres(services)
    password = environment(db).get("POSTGRES_PASSWORD", "")
    assert re.fullmatch(r"\$\{[A-Za-z_]\w*:?\?[^}]*\}", password), (
        "POSTGRES_PASSWORD must be required (`${POSTGRES_PASSWORD:?…}`), not written down"
    )


def test_container_settings_point_at_the_other_services(services: dict[str, Service]) -> None:
    db_name, db = postgres(services)
    db_env = resolved_environment(db)
    copied = dockerfile_copies()
    for name, service in app_services(services):
        env = resolved_environment(service)
        assert env[PREFIX + "ENV"] == "production", f"{name}: SWITCHBOARD_ENV must be production"
        for variable, value in env.items():
            if variable.startswith(PREFIX):
                assert not re.search(r"127\.0\.0\.1|localhost|\[::1\]", value), (
                    f"{name}: {variable}={value} is this container itself, not a service"
                )
        url = make_url(env[PREFIX + "DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg", f"{name}: database must be PostgreSQL"
        assert url.host == db_name and (url.port or 5432) == 5432, (
            f"{name}: database URL must point at {db_name}:5432, not {url.host}:{url.port}"
        )
        assert url.username == db_env["POSTGRES_USER"], f"{name}: database user differs"
        assert url.password == db_env["POSTGRES_PASSWORD"], f"{name}: database password differs"
        assert url.database == db_env.get("POSTGRES_DB", db_env["POSTGRES_USER"]), (
            f"{name}: database name differs from {db_name}'s POSTGRES_DB"
        )
        policy = Path(env[PREFIX + "POLICY"])
        assert policy.is_absolute() and policy.is_relative_to(IMAGE_WORKDIR), (
            f"{name}: SWITCHBOARD_POLICY must be an absolute path in the image ({IMAGE_WORKDIR})"
        )
        in_repo = policy.relative_to(IMAGE_WORKDIR)
        assert (ROOT / in_repo).is_file(), f"{name}: {in_repo} does not exist in the repository"
        assert in_repo.parts[0] in copied, f"the Dockerfile does not copy {in_repo}"


def test_the_compose_environment_validates_as_production(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in app_services(services):
        for variable in list(os.environ):
            if variable.upper().startswith(PREFIX):
                monkeypatch.delenv(variable)
        for variable, value in resolved_environment(service).items():
            monkeypatch.setenv(variable, value)
        built = Settings()  # raises on a bad value or a development secret in production
        assert built.env == "production", name


# --- (c) search attributes ---------------------------------------------------------------------


def cli_type(key: SearchAttributeKey[Any]) -> str:
    """The CLI's name of a search attribute type: KEYWORD_LIST → KeywordList."""
    return "".join(part.title() for part in key.indexed_value_type.name.split("_"))


def test_registered_search_attributes_equal_the_codes(services: dict[str, Service]) -> None:
    name, service = search_attribute_step(services)
    text = script(service)
    listed = re.search(r"attributes='([^']*)'", text)
    assert listed, f"{name}: no attributes='Name=Type …' list in its command"
    registered = [item.partition("=")[::2] for item in listed[1].split()]
    expected = [(key.name, cli_type(key)) for key in SEARCH_ATTRIBUTES]
    assert sorted(registered) == sorted(expected), (
        f"{name} registers {registered}, domain.types.SEARCH_ATTRIBUTES has {expected}"
    )
    # …and the list is what it creates, each with its own type.
    assert re.search(
        r"for (\w+) in \$attributes; do\s+retry temporal operator search-attribute create "
        r'--namespace "\$ns" --name "\$\{\1%%=\*\}" --type "\$\{\1#\*=\}"',
        text,
    ), f"{name}: the create loop no longer registers each Name=Type of the list"
    keywords = sum(kind == "Keyword" for _, kind in registered)
    assert keywords <= 10, f"SQL visibility allows 10 Keyword attributes, not {keywords}"


def test_one_namespace_everywhere(services: dict[str, Service]) -> None:
    name, service = search_attribute_step(services)
    namespace = resolved_environment(service).get("TEMPORAL_NAMESPACE")
    assert namespace, f"{name} must name its namespace in TEMPORAL_NAMESPACE"
    assert re.search(r"ns=\$TEMPORAL_NAMESPACE\b", script(service)), name
    for app, app_service in app_services(services):
        assert resolved_environment(app_service)[PREFIX + "TEMPORAL_NAMESPACE"] == namespace, (
            f"{app} uses another namespace than {name} prepares ({namespace})"
        )
    ui, ui_service = temporal_ui(services)
    assert resolved_environment(ui_service).get("TEMPORAL_DEFAULT_NAMESPACE") == namespace, ui


# --- (d) ports and images ----------------------------------------------------------------------


def dockerfile_lines() -> list[str]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def dockerfile_copies() -> set[str]:
    """Top-level repository entries the Dockerfile copies into the image."""
    copied: set[str] = set()
    for line in dockerfile_lines():
        instruction, *arguments = line.split()
        if instruction.upper() not in {"COPY", "ADD"}:
            continue
        if any(argument.startswith("--from") for argument in arguments):
            continue
        sources = [argument for argument in arguments if not argument.startswith("--")][:-1]
        for source in sources:
            for match in glob.glob(source, root_dir=ROOT) or [source]:
                top = Path(match).parts[0] if Path(match).parts else "."
                copied |= {path.name for path in ROOT.iterdir()} if top == "." else {top}
    return copied


def test_images_are_pinned(services: dict[str, Service]) -> None:
    for name, service in services.items():
        if "build" in service and "image" not in service:
            continue
        image = str(service.get("image", ""))
        tag = image_tag(service)
        assert "@sha256:" in image or (tag and tag != "latest" and re.search(r"\d", tag)), (
            f"{name}: pin {image!r} to a version tag (never latest, never untagged)"
        )
    base = next(line.split()[1] for line in dockerfile_lines() if line.upper().startswith("FROM"))
    assert ":" in base and not base.endswith(":latest"), f"Dockerfile: pin FROM {base}"


def test_temporal_tools_match_the_server(services: dict[str, Service]) -> None:
    server, server_service = temporal_server(services)
    for role in ONE_SHOTS:
        name, service = role(services)
        assert image_name(service) == "temporalio/admin-tools", name
        tools, version = image_tag(service), image_tag(server_service)
        assert tools == version, (
            f"{name} uses admin-tools {tools}, {server} runs {version}: the schema is the server's"
        )


def test_api_listens_where_it_is_published_and_checked(services: dict[str, Service]) -> None:
    api = services["api"]
    command = words(api.get("command"))
    assert "uvicorn" in command and command[command.index("uvicorn") + 1] == "api.main:app"
    assert (ROOT / "api" / "main.py").is_file() and "api" in dockerfile_copies()
    assert command[command.index("--host") + 1] == "0.0.0.0", "the API must listen on 0.0.0.0"
    port = int(command[command.index("--port") + 1])
    assert [target for _, target in published_ports(api)] == [port], (
        f"api listens on {port} but publishes {published_ports(api)}"
    )
    check = " ".join(words(api["healthcheck"]["test"]))
    assert re.search(rf"http://(127\.0\.0\.1|localhost):{port}/healthz\b", check), (
        f"api's health check must ask /healthz on port {port}: {check}"
    )
    exposed = {
        int(port.split("/")[0])
        for line in dockerfile_lines()
        if line.upper().startswith("EXPOSE")
        for port in line.split()[1:]
    }
    assert port in exposed, f"the Dockerfile does not EXPOSE {port}"


def test_clients_reach_temporal_on_its_grpc_port(services: dict[str, Service]) -> None:
    server, server_service = temporal_server(services)
    server_env = resolved_environment(server_service)
    grpc_port = int(server_env.get("FRONTEND_GRPC_PORT", "7233"))
    assert server_env.get("BIND_ON_IP") == "0.0.0.0", f"{server} must listen on every interface"
    check = " ".join(words(server_service["healthcheck"]["test"]))
    assert str(grpc_port) in check, f"{server}'s health check does not look at port {grpc_port}"
    clients: list[tuple[str, str]] = [
        (name, resolved_environment(service)[PREFIX + "TEMPORAL_ADDRESS"])
        for name, service in app_services(services)
    ]
    for role in (temporal_ui, search_attribute_step):
        name, service = role(services)
        clients.append((name, resolved_environment(service)["TEMPORAL_ADDRESS"]))
    for name, address in clients:
        assert host_port(address) == (server, grpc_port), (
            f"{name} talks to {address}, but Temporal's gRPC frontend is {server}:{grpc_port}"
        )


def test_temporal_stores_in_the_postgres_service(services: dict[str, Service]) -> None:
    db_name, db = postgres(services)
    db_env = resolved_environment(db)
    server, server_service = temporal_server(services)
    env = resolved_environment(server_service)
    assert env.get("DB") in {"postgres12", "postgres12_pgx"}, f"{server}: DB={env.get('DB')}"
    assert env.get("POSTGRES_SEEDS") == db_name, f"{server}: POSTGRES_SEEDS must be {db_name}"
    assert env.get("DB_PORT", "5432") == "5432", f"{server}: DB_PORT must be 5432"
    assert env.get("POSTGRES_USER") == db_env["POSTGRES_USER"], f"{server}: database user"
    assert env.get("POSTGRES_PWD") == db_env["POSTGRES_PASSWORD"], f"{server}: password"
    databases = {env.get("DBNAME", "temporal"): "temporal"}
    databases[env.get("VISIBILITY_DBNAME", "temporal_visibility")] = "visibility"
    app_database = db_env.get("POSTGRES_DB", db_env["POSTGRES_USER"])
    assert app_database not in databases, "Temporal must not share Switchboard's database"

    schema, schema_service = schema_step(services)
    schema_env = resolved_environment(schema_service)
    expected = {
        "SQL_PLUGIN": env["DB"],
        "SQL_HOST": db_name,
        "SQL_PORT": env.get("DB_PORT", "5432"),
        "SQL_USER": env["POSTGRES_USER"],
        "SQL_PASSWORD": env["POSTGRES_PWD"],
    }
    for variable, value in expected.items():
        assert schema_env.get(variable) == value, f"{schema}: {variable} must be {value!r}"
    text = script(schema_service)
    for database, kind in databases.items():
        for step in ("create", "setup-schema -v 0.0", rf"update-schema -d \S*/{kind}/versioned"):
            assert re.search(rf"temporal-sql-tool --db {database} {step}", text), (
                f"{schema} must run `temporal-sql-tool --db {database} {step}`"
            )
    prepared = set(re.findall(r"--db (\S+) create", text))
    assert prepared == set(databases), f"{schema} prepares {prepared}, {server} uses {databases}"


def test_temporal_dynamic_config_is_mounted_and_enables_updates(
    compose: dict[str, Any], services: dict[str, Service]
) -> None:
    """The conversation workflow takes agents' actions as updates."""
    server, service = temporal_server(services)
    path = resolved_environment(service).get("DYNAMIC_CONFIG_FILE_PATH")
    assert path, f"{server}: set DYNAMIC_CONFIG_FILE_PATH"
    mounted = {
        config["target"]: config["source"]
        for config in service.get("configs") or []
        if isinstance(config, Mapping)
    }
    assert path in mounted, f"{server}: nothing is mounted at {path}"
    content = yaml.safe_load(compose["configs"][mounted[path]]["content"])
    values = [entry["value"] for entry in content["frontend.enableUpdateWorkflowExecution"]]
    assert values == [True], f"{server}: updates must be enabled, got {values}"


def test_worker_scales(services: dict[str, Service]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "a container_name stops `--scale worker=N`"
    assert "hostname" not in worker, "a fixed hostname makes scaled workers indistinguishable"
    fixed = [host for host, _ in published_ports(worker) if host]
    assert not fixed, f"worker publishes fixed host ports {fixed}: a second one cannot start"
    assert words(worker.get("command"))[-1:] == ["worker.py"] and "worker.py" in dockerfile_copies()


def test_published_host_ports_are_unique(services: dict[str, Service]) -> None:
    seen: dict[str, str] = {}
    for name, service in services.items():
        for host, _ in published_ports(service):
            if host:
                assert host not in seen, f"{name} and {seen[host]} both publish host port {host}"
                seen[host] = name


def test_the_dockerfile_copies_every_installed_module() -> None:
    setuptools = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    wanted = {package.split(".")[0] for package in setuptools.get("packages", [])}
    wanted |= {f"{module}.py" for module in setuptools.get("py-modules", [])}
    wanted.add("config")
    for entry in sorted(wanted):
        assert (ROOT / entry).exists(), f"pyproject.toml installs {entry}, which does not exist"
    missing = sorted(wanted - dockerfile_copies())
    assert not missing, f"the Dockerfile does not copy {missing} into the image"
    workdir = [line.split()[1] for line in dockerfile_lines() if line.upper().startswith("WORKDIR")]
    assert workdir[-1:] == [IMAGE_WORKDIR], f"the image's WORKDIR must stay {IMAGE_WORKDIR}"


# --- (e) attachments ---------------------------------------------------------------------------


def test_attachments_live_in_the_object_store_service(services: dict[str, Service]) -> None:
    store, store_service = object_store(services)
    store_env = resolved_environment(store_service)
    command = words(store_service.get("command"))
    for name, service in app_services(services):
        env = resolved_environment(service)
        location = parse_attachments_url(env[PREFIX + "ATTACHMENTS_URL"])
        assert isinstance(location, S3Location), (
            f"{name}: attachments must go to the object store (s3://…), not into a container"
        )
        port = urlsplit(env[PREFIX + "S3_ENDPOINT_URL"]).port or 80
        assert f"-s3.port={port}" in command, f"{store} does not serve S3 on {port}: {command}"
        assert str(port) in store_service.get("expose", []), f"{store} does not expose {port}"
        check = " ".join(words(store_service["healthcheck"]["test"]))
        assert f"127.0.0.1:{port}/" in check, f"{store}'s health check does not ask port {port}"
        # The store's one identity is made from the API's keys.
        assert store_env.get("AWS_ACCESS_KEY_ID") == env[PREFIX + "S3_ACCESS_KEY_ID"], store
        assert store_env.get("AWS_SECRET_ACCESS_KEY") == env[PREFIX + "S3_SECRET_ACCESS_KEY"]
    assert not published_ports(store_service), (
        f"{store} publishes a port: attachments are fetched through the API's signed URLs only"
    )
    data = next(word.split("=", 1)[1] for word in command if word.startswith("-dir="))
    mounted = {
        str(mount).split(":")[1]: str(mount).split(":")[0] for mount in store_service["volumes"]
    }
    assert data in mounted and not mounted[data].startswith((".", "/")), (
        f"{store} must keep its data ({data}) on a named volume"
    )


def test_the_bucket_step_creates_the_apis_bucket(services: dict[str, Service]) -> None:
    """With the API's own image, code and settings: the bucket it creates is the one they use."""
    name, service = bucket_step(services)
    assert "build" in service and "image" not in service, f"{name} must run our image"
    assert words(service["command"]) == ["python", "-m", "media.storage", "create-bucket"], name
    assert (ROOT / "media" / "storage.py").is_file() and "media" in dockerfile_copies()
    assert service.get("restart") == "no", f'one-shot {name} must have restart: "no"'
    assert environment(service) == environment(services["api"]), (
        f"{name} must read the API's settings (x-switchboard-env): the same bucket and keys"
    )


# --- (f) compose's own validation, where a compose v2 binary exists --------------------------


def compose_command() -> list[str] | None:
    def answers(command: list[str]) -> str | None:
        try:
            done = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            return None
        return done.stdout if done.returncode == 0 else None

    if shutil.which("docker") and answers(["docker", "compose"]):
        return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    if standalone and re.search(r"v2\.", answers([standalone]) or ""):
        return [standalone]
    return None


def run_compose(command: list[str], env: dict[str, str], tmp_path: Path) -> Any:
    empty = tmp_path / "empty.env"  # so a local .env cannot fill in what the test leaves out
    empty.write_text("")
    base = {
        key: value
        for key, value in os.environ.items()
        if key not in required_variables(COMPOSE_FILE.read_text())
    }
    return subprocess.run(
        [*command, "--env-file", str(empty), "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**base, **env},
    )


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip(
            "no `docker compose` (v2) here: the docker client has no compose plugin and no v2 "
            "docker-compose is on PATH; the static checks above still ran"
        )
    done = run_compose(command, dummy_environment(), tmp_path)
    assert done.returncode == 0, f"`docker compose config` rejects the file:\n{done.stderr}"
    refused = run_compose(command, {}, tmp_path)
    assert refused.returncode != 0 and "required variable" in refused.stderr, (
        f"compose must refuse to start without the secrets:\n{refused.stderr}"
    )
