from videomt_jax.modeling.outputs import StreamState, VideomtOutput
from videomt_jax.modeling.videomt import VideomtModel, init_params, init_state

__all__ = ["StreamState", "VideomtOutput", "VideomtModel", "init_params", "init_state"]
