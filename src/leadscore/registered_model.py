"""The registered pyfunc model's code, logged as MLflow "models from code".

MLflow copies this file into the model and runs it when the model is loaded, instead of
unpickling a copy of :class:`leadscore.tracking.LeadScoreModel` that was frozen at training
time: a registered version loads with the installed leadscore, and nothing in it but the
hash-checked bundle is a pickle.
"""

import mlflow

from leadscore.tracking import LeadScoreModel

mlflow.models.set_model(LeadScoreModel())
