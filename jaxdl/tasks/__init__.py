"""What differs between experiments: the model's init, the per-example loss and metrics.

A task turns a batch into per-example values (`loss` plus any metric); the training step
weights them by the batch mask and sums them, so every task gets exact (sum, count)
metrics, padded evaluation and data parallelism for free.
"""

from jaxdl.tasks.base import (EvalContext, Learned, Task, build_task, check_model_state,
                              metric_names, register_task, task_fields, task_names,
                              unavailable_metrics)
from jaxdl.tasks import classification as _classification  # noqa: F401  (registers it)
from jaxdl.tasks import gan as _gan  # noqa: F401
from jaxdl.tasks import regression as _regression  # noqa: F401
from jaxdl.tasks import sequence as _sequence  # noqa: F401
from jaxdl.tasks import autoencoder as _autoencoder  # noqa: F401
from jaxdl.tasks import word2vec as _word2vec  # noqa: F401
from jaxdl.tasks import distillation as _distillation  # noqa: F401
from jaxdl.tasks import seq2seq as _seq2seq  # noqa: F401

__all__ = ["EvalContext", "Learned", "Task", "build_task", "check_model_state",
           "metric_names", "register_task", "task_fields", "task_names", "unavailable_metrics"]
