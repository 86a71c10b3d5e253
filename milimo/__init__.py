"""The application layer: what every way in (the CLI, the dashboard, `milimo serve`, the flows) shares.

- `settings`: milimo.toml, the command line and every `MILIMO_*` variable, read once into one validated object;
- `context`: one per process: the settings, the store (one engine per URL) and the output layout;
- `request`: `RenderRequest`, what a render is asked to do, whoever asks;
- `prepare`: load -> overrides -> validate -> identity -> specs -> import revision -> plan, once per render;
- `errors`: the one table from an error to an exit code, an HTTP status and a Prefect state;
- `reports`: status rows, seam notes and summaries, without Prefect.

It sits above the storyboard domain and the engine's plain types, and below the flows, tasks, CLI and dashboard.
"""
