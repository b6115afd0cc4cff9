"""The registered pyfunc model's code, logged as MLflow "models from code".

MLflow copies this file into the model and runs it when the model is loaded, instead of
unpickling a copy of :class:`leadscore.tracking.LeadScoreModel` frozen at training time.
The model also carries leadscore's code (its ``code/`` folder, first on the path when MLflow
loads it), so it loads where leadscore is not installed; nothing in it but the hash-checked
bundle is a pickle.
"""

import mlflow

from leadscore.tracking import LeadScoreModel

mlflow.models.set_model(LeadScoreModel())
