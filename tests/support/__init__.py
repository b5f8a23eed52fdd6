"""The test toolkit, shared by every test and by bench/ (test modules never import each other).

- `api`: the one client of the HTTP API (`ApiClient`), its tokens, waits and event streams;
- `system`: a worker and the API in process on a real Temporal server (`System`);
- `processes`: the deployed processes (`Deployment`) and free ports;
- `temporal`: Temporal servers (time-skipping, dev server in memory or on a file: `DevServer`);
- `policy` and `data`: builders of policy files, settings and database rows;
- `callers` and `access`: every kind of caller and what each may call;
- `canary`: a unique text for every free-text field, and every table row and workflow
  history to look for it in;
- `proxy` (a TCP link to cut) and `browser` (headless Chromium) for the fault and UI tests;
- `object_store`: an S3-compatible server in process (moto), and settings pointing at it.

This package imports nothing itself: bench/ takes `api` without the application's modules.
"""
