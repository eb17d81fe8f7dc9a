"""``featurestream serve``, ``train-model``, ``serve-model``: features and the example
model over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import load_settings, one_line_errors


@click.command()
@click.option("--host", default=None, help="Bind address (default FEATURESTREAM_SERVE_HOST).")
@click.option("--port", type=int, default=None, help="Port (default FEATURESTREAM_SERVE_PORT).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--header-timeout",
    "header_timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    envvar="FEATURESTREAM_SERVE_HEADER_TIMEOUT_S",
    show_envvar=True,
    help="Seconds a connection has to send a request's headers (longer: 408, closed).",
)
@click.option(
    "--body-timeout",
    "body_timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    envvar="FEATURESTREAM_SERVE_BODY_TIMEOUT_S",
    show_envvar=True,
    help="Seconds a request's body has to arrive after its headers (longer: 408, closed).",
)
@click.option("--feast", "use_feast", is_flag=True, help="Run Feast's own feature server.")
@one_line_errors
def serve(
    host: str | None,
    port: int | None,
    workers: int,
    header_timeout_s: float,
    body_timeout_s: float,
    use_feast: bool,
) -> None:
    """Serve online features over HTTP: Feast's POST /get-online-features API, fast.

    API keys come from FEATURESTREAM_SERVE_API_KEYS_FILE, TLS from
    FEATURESTREAM_SERVE_TLS_KEYFILE and FEATURESTREAM_SERVE_TLS_CERTFILE.

    Slow clients: a request must send its headers within --header-timeout and its
    body within --body-timeout of them, else it is answered 408 and its connection
    closed; a lookup counts against the in-flight limit only once its body has
    arrived. Prints "listening on URL (N workers)" once the server answers.
    """
    from streams.online import check_online_store

    settings = load_settings()
    check_online_store(settings.online_redis_url, settings.connect_timeout_s)
    host, port = host or settings.serve_host, port or settings.serve_port
    if use_feast:
        from serving.feast_server import serve_feast

        serve_feast(
            settings.repo_path, settings.online_redis_url, host=host, port=port, workers=workers
        )
        return
    from serving import ServerSettings, load_api_keys, run_server

    keys = settings.serve_api_keys_file
    run_server(
        settings.repo_path,
        settings.online_redis_url,
        host=host,
        port=port,
        workers=workers,
        settings=ServerSettings(
            api_keys=load_api_keys(keys) if keys else {},
            redis_timeout_ms=settings.serve_online_timeout_ms,
            header_timeout_s=header_timeout_s,
            body_timeout_s=body_timeout_s,
            allow_evicting_store=settings.allow_evicting_store,
        ),
        ssl_keyfile=settings.serve_tls_keyfile,
        ssl_certfile=settings.serve_tls_certfile,
        log_level="warning",
        progress=lambda line: click.echo(line, err=True),
    )


@click.command("train-model")
@click.option("--max-clicks", default=20_000, show_default=True, type=click.IntRange(min=1))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Model file.")
@one_line_errors
def train_model_cmd(max_clicks: int, out: Path | None) -> None:
    """Train the example recommender on point-in-time training data from the offline log."""
    from featurestream_app.model import default_model_path, train
    from streams.repo import open_store

    settings = load_settings()
    store = open_store(settings.repo_path, settings.online_redis_url)
    path = out or default_model_path(settings)
    model = train(store, path, max_clicks=max_clicks)
    click.echo(f"trained on {model.metrics['rows']} rows: {json.dumps(model.metrics)}")
    click.echo(f"written: {path}")


@click.command("serve-model")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=6570, show_default=True)
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None)
@one_line_errors
def serve_model_cmd(host: str, port: int, model_path: Path | None) -> None:
    """Serve POST /predict: the recommender's score for a user and a candidate item."""
    import uvicorn

    from featurestream_app.model import default_model_path, load_model
    from serving.inference.app import build_model_app
    from streams.online import check_online_store
    from streams.repo import open_store

    settings = load_settings()
    check_online_store(settings.online_redis_url, settings.connect_timeout_s)
    model = load_model(model_path or default_model_path(settings))
    store = open_store(settings.repo_path, settings.online_redis_url)
    uvicorn.run(build_model_app(store, model), host=host, port=port, log_level="warning")
