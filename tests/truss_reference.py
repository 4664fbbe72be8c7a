"""Serve a Truss package with Truss's own model server, as its container does.

Run with the Python of a venv holding ``truss`` and its server's requirements (see
``tests/truss_env.py``)::

    python truss_reference.py PACKAGE WORKDIR PORT

Truss's image builder renders the package's build folder (the server code, the model, the
config.yaml Truss writes); the folder the container calls ``/app`` is assembled from it
under WORKDIR and the server started there on 127.0.0.1:PORT. An environment named by
``TRUSS_TEST_ENVIRONMENT`` is given to the model as Baseten's dynamic config does.
``TRUSS_TEST_FALLBACK_PATH`` (folders separated by ``os.pathsep``) is searched for modules
after the venv's own, so a model may import libraries (torch, diffusers) from the test's
own environment without a second install.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def main(package: Path, workdir: Path, port: int) -> None:
    from truss.contexts.image_builder.serving_image_builder import ServingImageBuilderContext

    build, app = workdir / "build", workdir / "app"
    shutil.rmtree(workdir, ignore_errors=True)
    build.mkdir(parents=True)
    ServingImageBuilderContext.run(package).prepare_image_build_dir(build)
    shutil.copytree(build / "server", app)  # COPY ./server ${APP_HOME}
    shutil.copytree(build / "model", app / "model")  # COPY ./model ${APP_HOME}/model
    shutil.copy(build / "config.yaml", app / "config.yaml")
    if (package / "data").is_dir():  # COPY ./data ${APP_HOME}/data
        shutil.copytree(package / "data", app / "data")
    os.chdir(app)
    sys.path.insert(0, str(app))
    fallback = os.environ.get("TRUSS_TEST_FALLBACK_PATH")
    if fallback:
        sys.path.extend(fallback.split(os.pathsep))

    from _truss_shared import dynamic_config_resolver

    dynamic = workdir / "dynamic_config"
    dynamic.mkdir()
    dynamic_config_resolver.DYNAMIC_CONFIG_MOUNT_DIR = str(dynamic)
    name = os.environ.get("TRUSS_TEST_ENVIRONMENT")
    if name:
        (dynamic / "environment").write_text(json.dumps({"name": name}))

    import uvicorn

    configure = uvicorn.Config.__init__

    def on_loopback(self, *args, **kwargs):  # the server binds 0.0.0.0; tests use loopback
        kwargs["host"] = "127.0.0.1"
        configure(self, *args, **kwargs)

    uvicorn.Config.__init__ = on_loopback

    from truss_server import TrussServer

    TrussServer(http_port=port, config_or_path=app / "config.yaml").start()


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve(), int(sys.argv[3]))
