"""``impasto deploy ray PATH...``: scale out on Ray Serve (see docs/scale.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from .folders import package_path
from .output import console, err_console, handle_errors

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)


def _ray() -> None:
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        raise ConfigError("Ray Serve is not installed; pip install 'impasto[ray]'") from None


@app.command("ray")
@handle_errors
def deploy_ray(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Package folders (the first is the default model)."),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            envvar="RAY_ADDRESS",
            help="The Ray cluster: auto, ray://host:10001 or a head's GCS host:port.",
        ),
    ] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", min=1, help="Replicas of each model.")
    ] = None,
    autoscale: Annotated[
        str | None,
        typer.Option("--autoscale", help="MIN:MAX replicas, scaled on each replica's queue."),
    ] = None,
    gpus_per_replica: Annotated[
        float | None,
        typer.Option("--gpus-per-replica", min=0, help="GPUs Ray reserves per model replica."),
    ] = None,
    max_ongoing_requests: Annotated[
        int | None,
        typer.Option(
            "--max-ongoing-requests",
            min=1,
            help="Requests one replica takes at once (default: its runner's capacity).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="The application (default: the first model's).")
    ] = None,
    http_host: Annotated[
        str, typer.Option("--http-host", help="Ray Serve's HTTP proxy host (at Serve's start).")
    ] = "127.0.0.1",
    http_port: Annotated[
        int, typer.Option("--http-port", help="Ray Serve's HTTP proxy port (at Serve's start).")
    ] = 8000,
    route_prefix: Annotated[
        str, typer.Option("--route-prefix", help="Where the application's routes start.")
    ] = "/",
    show_status: Annotated[
        bool, typer.Option("--status", help="Show the application(s) instead of deploying.")
    ] = False,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete the application (--name, else PATH's).")
    ] = False,
) -> None:
    """Deploy packages to Ray Serve: an ingress serving every protocol, one model deployment
    per package.

    Example: impasto deploy ray examples/tiny-sd --address auto --autoscale 1:4
    """
    _ray()
    from ..package import load_package
    from ..ray import deploy as ray_deploy

    if replicas is not None and autoscale is not None:
        raise typer.BadParameter("give --replicas or --autoscale, not both")
    if show_status and delete:
        raise typer.BadParameter("give --status or --delete, not both")
    folders = [package_path(p) for p in paths or []]
    if (show_status or delete) and name is None and folders:
        name = load_package(folders[0]).name
    if show_status:
        console.print_json(json.dumps(ray_deploy.status(name, address=address)))
        return
    if delete:
        if name is None:
            raise typer.BadParameter("--delete needs --name or PATH")
        ray_deploy.delete(name, address=address)
        err_console.print(f"deleted {name}")
        return
    if not folders:
        folders = [package_path(None)]
    opts = ray_deploy.DeployOptions(
        replicas=replicas,
        autoscale=ray_deploy.parse_autoscale(autoscale) if autoscale else None,
        gpus_per_replica=gpus_per_replica,
        max_ongoing_requests=max_ongoing_requests,
    )
    app_name = ray_deploy.deploy(
        [str(f) for f in folders],
        opts,
        name=name,
        address=address,
        http_host=http_host,
        http_port=http_port,
        route_prefix=route_prefix,
    )
    prefix = route_prefix.rstrip("/")
    err_console.print(f"{app_name} is running at http://{http_host}:{http_port}{prefix}/")


def serve_on_ray(folders: list[Path], host: str, port: int) -> None:
    """``impasto serve PATH --ray`` (package folders only: a models.yaml is one process's)."""
    _ray()
    from ..ray import deploy as ray_deploy

    if not folders:
        raise typer.BadParameter("--ray serves package folders, not --models")
    ray_deploy.serve_locally(
        [str(f) for f in folders], ray_deploy.DeployOptions(), host=host, port=port
    )
