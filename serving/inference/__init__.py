"""An example inference service on ``recommender_v1``: trained on point-in-time training
data from the offline log, served with the same features read online.

* ``serving.inference.model``: the model and the one function turning a feature row
  into model inputs, shared by training and serving (pure, numpy only).
* ``serving.inference.train``: training data through ``get_historical_features``.
* ``serving.inference.app``: ``POST /predict`` over HTTP.
"""

from .model import FEATURE_SERVICE, LogisticModel, vectorize

__all__ = ["FEATURE_SERVICE", "LogisticModel", "vectorize"]
