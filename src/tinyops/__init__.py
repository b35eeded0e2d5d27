"""tinyops: MLOps for machine learning on microcontrollers and edge devices.

Import cost matters: `tinyops --help` must start fast, so nothing here imports
TensorFlow, Keras or MLflow. Those are imported inside the stages that need them.
"""

from tinyops.errors import TinyopsError

__version__ = "0.1.0"
__all__ = ["TinyopsError", "__version__"]
