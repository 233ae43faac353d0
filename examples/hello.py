"""Hello world: the original LitServe README example, served on CPU.

Run it, then in another terminal run the client.py it writes next to you:

    python examples/hello.py          # serves http://127.0.0.1:8000/predict
    python client.py                  # Status: 200 / {"output":16.0}
"""

from __future__ import annotations

import argparse

import litserve as ls


# STEP 1: DEFINE YOUR MODEL API
class SimpleLitAPI(ls.LitAPI):
    def setup(self, device):
        # Setup the model so it can be called in `predict`.
        self.model = lambda x: x**2

    def decode_request(self, request):
        # Convert the request payload to your model input.
        return request["input"]

    def predict(self, x):
        # Run the model on the input and return the output.
        return self.model(x)

    def encode_response(self, output):
        # Convert the model output to a response payload.
        return {"output": output}


# STEP 2: START THE SERVER
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    args = parser.parse_args()

    api = SimpleLitAPI()
    server = ls.LitServer(api, accelerator="cpu")
    server.run(host=args.host, port=args.port)
