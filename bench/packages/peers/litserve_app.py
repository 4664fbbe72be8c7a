"""The benchmark's no-op and image workloads as a LitServe app, written as its docs show.

    python litserve_app.py noop|image PORT IMAGES_DIR

Run by ``bench/peers.py`` with the Python of a virtualenv that has litserve installed.
"""

import base64
import io
import sys
from pathlib import Path

import litserve as ls
import numpy as np
from PIL import Image


class Noop(ls.LitAPI):
    def setup(self, device):
        pass

    def decode_request(self, request):
        return request

    def predict(self, x):
        return x

    def encode_response(self, output):
        return output


class Picture(ls.LitAPI):
    """Answers a prepared image as base64 PNG (Pillow's defaults) in JSON."""

    def __init__(self, images_dir: Path):
        super().__init__()
        self.images_dir = images_dir

    def setup(self, device):
        self.images = {}
        for size in (512, 1024):
            with Image.open(self.images_dir / f"{size}.png") as img:
                self.images[size] = Image.fromarray(np.asarray(img))

    def decode_request(self, request):
        return int(request.get("size", 512))

    def predict(self, size):
        return self.images[size]

    def encode_response(self, image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return {"output": {"data": data, "content_type": "image/png"}}


if __name__ == "__main__":
    workload, port, images = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    api = Noop() if workload == "noop" else Picture(images)
    server = ls.LitServer(api, accelerator="cpu")
    server.run(host="127.0.0.1", port=port, generate_client_file=False)
