"""MatRIS-JAX: the MatRIS interatomic potential (separable attention over the atom graph and
the three-body line graph) in JAX/Flax.

    import matris
    model = matris.load()                      # the model shipped in the repository
    model = matris.load("bundle.npz")          # a release bundle
    cfg = matris.MatRISConfig(num_layers=4)    # or a preset: matris.get_config("10m")
"""

from .bundle import load, save
from .calculator import MatRISCalculator
from .config import PRESETS, MatRISConfig, get_config
from .potential import Model, count_params, init_params, make_predictor
from .predict import predict

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "MatRISCalculator", "MatRISConfig", "Model", "count_params", "get_config",
    "init_params", "load", "make_predictor", "predict", "save", "__version__",
]
