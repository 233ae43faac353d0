"""A scikit-learn model: logistic regression trained in setup() on the iris data bundled with sklearn.

    python examples/sklearn_model.py
    curl -X POST http://127.0.0.1:8000/predict -H "Content-Type: application/json" \
         -d '{"input": [5.1, 3.5, 1.4, 0.2]}'
    # {"output":{"class":0,"label":"setosa","probabilities":[...]}}

Nothing is downloaded: load_iris() reads a file shipped inside scikit-learn, and training is
deterministic, so every worker (and every run) gets the same model.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

import litserve as ls

N_FEATURES = 4  # sepal length, sepal width, petal length, petal width (cm)


def train_model() -> tuple[Any, list[str]]:
    """Fit a LogisticRegression on iris; return it and the class names."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    model = LogisticRegression(max_iter=1000)
    model.fit(iris.data, iris.target)
    return model, [str(name) for name in iris.target_names]


class SklearnLitAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model, self.labels = train_model()

    def decode_request(self, request: Any) -> np.ndarray:
        values = request.get("input") if isinstance(request, dict) else None
        if not isinstance(values, list) or len(values) != N_FEATURES:
            raise ls.HTTPException(400, f'"input" must be a list of {N_FEATURES} measurements in cm')
        try:
            return np.asarray([values], dtype=np.float64)  # one row: sklearn predicts on 2-D arrays
        except (TypeError, ValueError):
            raise ls.HTTPException(400, f'"input" must be a list of {N_FEATURES} measurements in cm') from None

    def predict(self, x: np.ndarray) -> tuple[int, list[float]]:
        probabilities = self.model.predict_proba(x)[0]
        return int(np.argmax(probabilities)), probabilities.tolist()

    def encode_response(self, output: tuple[int, list[float]]) -> dict[str, Any]:
        klass, probabilities = output
        return {"output": {"class": klass, "label": self.labels[klass], "probabilities": probabilities}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    args = parser.parse_args()

    server = ls.LitServer(SklearnLitAPI(), accelerator="cpu")
    server.run(host=args.host, port=args.port)
