"""Model configuration: one frozen dataclass and the named presets."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

ANGLE_BASES = ("fourier", "sh")
NORMS = ("layer", "rms")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class MatRISConfig:
    """Every architectural option of MatRIS (see shared/design/matris.md, sections 2-6).

    num_layers: interaction blocks.  atom_dim / bond_dim / angle_dim: feature widths
    (d_n, d_e, d_t).  cutoff / three_body_cutoff: r_c and r_3 in A.  num_radial: Bessel
    functions K.  num_angular: Fourier angle features (2F+1; must equal num_radial, spec 10.17).
    envelope_exponent: p of the polynomial envelope.  learnable_basis: trainable Bessel and
    Fourier frequencies.  angle_basis: "fourier" | "sh" (the official default; reproduces its
    unit-vector quirk).  norm: "layer" | "rms" in gated MLPs and the readout.  norm_eps: None =
    the official choice (LayerNorm 1e-5; RMSNorm machine epsilon of the dtype).
    energy_hidden / magmom_hidden: readout MLP hidden widths.  intensive: the model's energy
    target is per atom (affects training/reporting only; totals are identical).
    smooth: envelope-weighted attention so energy and forces are continuous at r_c and r_3
    (our deviation; False reproduces the official computation).  remat: rematerialise each
    interaction block in the backward pass, blocks then run in a rolled loop (about 5x less
    memory for forces; on CPU 10-30 % slower while the unrolled model's buffers are small,
    faster once they pass a few GB: official shape, 128 atoms slower, 256 atoms faster).
    remat_save_dots: in rematerialised code (remat blocks, chunked loop bodies) keep the
    matrix-product outputs and recompute only the elementwise work (block remat: about 2.3x
    the memory of full remat, half of none; official shape on the 2-core VM, runs
    interleaved: 256 Fe atoms 4.65 vs 5.00 s, 512 atoms 11.0 vs 11.9 s; chunked: 28 vs 16.5
    bytes per angle, feature and block, 256 atoms 5.7 vs 6.1-6.9 s).
    chunk_rows: > 0 runs every attention and refinement sub-layer over chunks of that many
    rows (angles, directed edges) with a rematerialised loop body (`matris.nn.chunked`): a
    force call's per-row scratch shrinks from dozens of whole [rows, width] arrays per block
    to a few chunk-sized ones (same results and parameters).
    scan_blocks: run the blocks with a rolled ``lax.scan``
    (compile time independent of depth, up to ~1.3x slower on CPU) instead of unrolled.
    Neither changes results or parameters.  element_features: add a learned projection of
    fixed element descriptors (period, group, block, valence electrons, radius, ...;
    `matris.nn.elements`) to the atom embedding, so rarely seen elements borrow from their
    neighbours in the periodic table (our addition; off in the official presets).
    element_chemistry: also add a learned projection of each element's Pauling
    electronegativity and first ionisation energy, the quantities that set the sign and size
    of a formation energy (our addition, off in the presets).
    symmetric_angles: one line-graph row per unordered pair of bonds at a centre instead of
    one per ordered pair, with the two bond pieces of the line-graph MLPs sharing one kernel
    and each row's message going to both of its bonds (our addition, for new models).  This is
    exactly the ordered model with tied bond kernels (`matris.nn.symmetric`): half the angle
    rows, so about half the per-angle work.  Graphs must be built with the same setting
    (`matris.graph.graph_for`).
    core_repulsion: f > 0 adds the ZBL screened nuclear repulsion for every pair closer than f
    times its covalent-radius sum, switched off smoothly there (`matris.nn.repulsion`; our
    addition, no parameters).  0.5 stays below every pair distance of the shipped training
    set, so it changes nothing there and only fills the deep holes an untrained network
    leaves at half a bond length.  0 (the presets): off.
    dtype: compute dtype.
    """

    num_layers: int = 6
    atom_dim: int = 128
    bond_dim: int = 128
    angle_dim: int = 128
    cutoff: float = 6.0
    three_body_cutoff: float = 4.0
    num_radial: int = 7
    num_angular: int = 7
    envelope_exponent: int = 8
    learnable_basis: bool = True
    angle_basis: str = "sh"
    norm: str = "rms"
    norm_eps: float | None = None
    energy_hidden: tuple[int, ...] = (128, 128)
    magmom_hidden: tuple[int, ...] = (256,)
    intensive: bool = True
    smoothed_delta_edge: bool = False
    smooth: bool = False
    remat: bool = False
    remat_save_dots: bool = False
    scan_blocks: bool = False
    chunk_rows: int = 0
    element_features: bool = False
    element_chemistry: bool = False
    symmetric_angles: bool = False
    core_repulsion: float = 0.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "energy_hidden", tuple(int(h) for h in self.energy_hidden))
        object.__setattr__(self, "magmom_hidden", tuple(int(h) for h in self.magmom_hidden))
        if self.angle_basis not in ANGLE_BASES:
            raise ValueError(f"angle_basis must be one of {ANGLE_BASES}, got {self.angle_basis!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if not 0 < self.three_body_cutoff <= self.cutoff:
            raise ValueError("need 0 < three_body_cutoff <= cutoff")
        if self.angle_basis == "fourier" and (self.num_angular % 2 != 1):
            raise ValueError("the Fourier angle basis needs an odd num_angular (2F+1)")
        if not 0.0 <= self.core_repulsion <= 1.5:
            raise ValueError("core_repulsion must be in [0, 1.5] (a fraction of the covalent-"
                             f"radius sum; 0 = off), got {self.core_repulsion}")
        if self.num_angular != self.num_radial:
            raise ValueError("num_angular must equal num_radial (spec 10.17)")

    @property
    def angle_features(self) -> int:
        """Width of the raw angle basis: 2F+1 for Fourier, 16 for the spherical option."""
        return self.num_angular if self.angle_basis == "fourier" else 16

    def replace(self, **changes: Any) -> MatRISConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["energy_hidden"] = list(self.energy_hidden)
        out["magmom_hidden"] = list(self.magmom_hidden)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MatRISConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MatRISConfig keys: {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_TEN_M = dict(
    num_layers=10,
    three_body_cutoff=4.5,
    angle_basis="fourier",
    norm="layer",
    energy_hidden=(256, 128, 128),
)

PRESETS: dict[str, MatRISConfig] = {
    # Defaults of the official package (0.1.0): 6 layers, RMSNorm, spherical angle basis.
    "official": MatRISConfig(),
    # Released 10M recipe (10,443,505 parameters) and its 6- and 4-layer siblings.
    "10m": MatRISConfig(**_TEN_M),
    "6m": MatRISConfig(**{**_TEN_M, "num_layers": 6}),
    "4m": MatRISConfig(**{**_TEN_M, "num_layers": 4}),
    # Small presets that train on two CPU cores; smooth cutoffs for new training.
    "small": MatRISConfig(
        num_layers=3, atom_dim=64, bond_dim=64, angle_dim=64, angle_basis="fourier",
        norm="layer", energy_hidden=(64, 64), magmom_hidden=(64,), smooth=True,
    ),
    "tiny": MatRISConfig(
        num_layers=2, atom_dim=32, bond_dim=32, angle_dim=32, angle_basis="fourier",
        norm="layer", energy_hidden=(32,), magmom_hidden=(32,), smooth=True,
    ),
}


def get_config(name_or_config: str | MatRISConfig | dict, **overrides: Any) -> MatRISConfig:
    """A preset by name, a dict of fields, or a config; ``overrides`` replace fields."""
    if isinstance(name_or_config, MatRISConfig):
        cfg = name_or_config
    elif isinstance(name_or_config, dict):
        cfg = MatRISConfig.from_dict(name_or_config)
    else:
        key = str(name_or_config).lower()
        if key not in PRESETS:
            raise ValueError(f"unknown preset {name_or_config!r}; known: {sorted(PRESETS)}")
        cfg = PRESETS[key]
    return cfg.replace(**overrides) if overrides else cfg
