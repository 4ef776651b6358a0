from videomt_jax.modeling.eomt import EomtModel
from videomt_jax.modeling.family import init_params, model_for
from videomt_jax.modeling.outputs import StreamState, VideomtOutput
from videomt_jax.modeling.videomt import VideomtModel, init_state

__all__ = ["EomtModel", "StreamState", "VideomtOutput", "VideomtModel", "init_params", "init_state", "model_for"]
