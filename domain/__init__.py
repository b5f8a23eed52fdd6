"""Plain types and policy shared by the API, the workflows and the activities."""
