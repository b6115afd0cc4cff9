"""The registered pyfunc model's code, logged as MLflow "models from code".

MLflow copies this file into the model and runs it when the model is loaded, instead of
unpickling a copy of :class:`leadscore.serving.registry.LeadScoreModel` frozen at training time.
The model also carries leadscore's code (its ``code/`` folder, first on the path when MLflow
loads it), so it loads where leadscore is not installed. The bundle's manifest records the
hash of every one of these files; leadscore's own loader (:func:`leadscore.serving.registry.load_scorer`,
``leadscore verify``) refuses a copy whose code differs, without running it.
"""

import mlflow

from leadscore.serving.registry import LeadScoreModel

mlflow.models.set_model(LeadScoreModel())
