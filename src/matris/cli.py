"""The `matris` command: predict, eval, relax, md, train, convert.

    matris predict in.extxyz -o out.extxyz [--model M] [--task efsm] [--batch-size 16]
    matris eval labelled.extxyz [--model M] [--by split] [--json errors.json]
    matris relax in.extxyz -o out.extxyz [--fmax 0.05] [--steps 500] [--fix-cell] [--batch]
    matris md in.extxyz [-o md.traj] [--ensemble nvt] [--temperature 1500] [--steps 1000]
    matris train CONFIG [...]          (matris.training)
    matris convert CKPT -o OUT.npz     (matris.convert)

`train` and `convert` are dispatched lazily: their modules are imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Sequence

from .runtime import reexec_with_tunables

LAZY = {"train": ("training", "train a model from a YAML config"),
        "convert": ("convert", "convert an official PyTorch checkpoint to a bundle")}


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="bundle path, shipped model name or official checkpoint "
                        "(default: the model shipped in the repository)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None)


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict energies, forces, stresses, magmoms")
    p.add_argument("input", help="structures (extxyz or any format ase reads)")
    p.add_argument("-o", "--output", required=True, help="extxyz with predictions")
    p.add_argument("--task", default="efsm", choices=("e", "ef", "efs", "efsm", "em", "efm"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--index", default=":", help="ase index of the frames to read")
    p.add_argument("--no-progress", action="store_true")
    _model_args(p)


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="errors (MAE, RMSE, mean signed) against labelled structures")
    p.add_argument("input", help="labelled structures: extxyz (REF_* keys or calculator "
                                 "results) or an MPtrj JSON")
    p.add_argument("--by", default=None, help="also per value of this info key (e.g. split)")
    p.add_argument("--json", default=None, help="write the table as JSON to this file")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--index", default=":", help="ase index of the frames to read (extxyz)")
    p.add_argument("--progress", action="store_true")
    _model_args(p)


def _relax_parser(sub) -> None:
    p = sub.add_parser("relax", help="relax structures (FIRE, cell included unless --fix-cell)")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="extxyz of relaxed structures")
    p.add_argument("--fmax", type=float, default=0.05, help="eV/A")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--fix-cell", action="store_true")
    p.add_argument("--batch", action="store_true", help="relax all together (BatchRelaxer)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--optimizer", default="FIRE", help="ASE optimizer (without --batch)")
    p.add_argument("--index", default=":")
    _model_args(p)


def _md_parser(sub) -> None:
    p = sub.add_parser("md", help="molecular dynamics (NVE, NVT, NPT) on ASE integrators")
    p.add_argument("input")
    p.add_argument("-o", "--trajectory", default="md.traj")
    p.add_argument("--log", default="md.log", help="ASE MD log ('-' for stdout)")
    p.add_argument("--summary", default=None, help="JSON file for the run summary")
    p.add_argument("--ensemble", default="nve", choices=("nve", "nvt", "npt"))
    p.add_argument("--thermostat", default=None,
                   help="nvt: langevin | nose-hoover | bussi | berendsen | andersen; "
                        "npt: mtk | mtk-isotropic | berendsen (what the installed ASE offers)")
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--pressure", type=float, default=0.0, help="GPa (npt)")
    p.add_argument("--taut", type=float, default=100.0, help="fs")
    p.add_argument("--taup", type=float, default=1000.0, help="fs")
    p.add_argument("--friction", type=float, default=0.01, help="1/fs (langevin)")
    p.add_argument("--loginterval", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", default="0", help="which frame of the input")
    _model_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matris", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _predict_parser(sub)
    _eval_parser(sub)
    _relax_parser(sub)
    _md_parser(sub)
    for name, (_, text) in LAZY.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def run_predict(args) -> None:
    from .predict import predict_file

    n = predict_file(args.input, args.output, args.model, args.task, args.dtype,
                     args.batch_size, args.index, progress=not args.no_progress)
    print(f"wrote {n} structures with predictions to {args.output}")


def run_eval(args) -> None:
    from .evaluate import evaluate_file, markdown

    table = evaluate_file(args.input, args.model, args.dtype, args.batch_size, args.by,
                          args.index, progress=args.progress)
    print(markdown(table))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)


def _read(path: str, index: str) -> list:
    from .data.extxyz import read_structures

    return read_structures(path, index)


def run_relax(args) -> None:
    import ase.io

    from .relax import BatchRelaxer, relax

    atoms_list = _read(args.input, args.index)
    if args.batch:
        relaxer = BatchRelaxer(args.model, args.dtype, fmax=args.fmax, steps=args.steps,
                               relax_cell=not args.fix_cell, batch_size=args.batch_size,
                               progress=True)
        results = relaxer.relax(atoms_list)
    else:
        from .calculator import MatRISCalculator

        calc = MatRISCalculator(args.model, task="efsm", dtype=args.dtype)
        results = [relax(a, calc, args.optimizer, args.fmax, args.steps, not args.fix_cell)
                   for a in atoms_list]
    for r in results:
        r.atoms.info.update(relax_converged=r.converged, relax_steps=r.steps)
    ase.io.write(args.output, [r.atoms for r in results], format="extxyz")
    n_conv = sum(r.converged for r in results)
    print(f"relaxed {len(results)} structures ({n_conv} converged) -> {args.output}")


def run_md_command(args) -> None:
    from .calculator import MatRISCalculator
    from .md import run_md

    atoms = _read(args.input, args.index)[0]
    summary = run_md(atoms, MatRISCalculator(args.model, task="efsm", dtype=args.dtype),
                     args.ensemble, args.thermostat, args.temperature, args.timestep,
                     args.steps, args.pressure, args.taut, args.taup, args.friction,
                     args.trajectory, args.log, args.loginterval, args.seed)
    print(f"{summary.steps} steps, {summary.n_atoms} atoms: "
          f"{summary.s_per_step * 1e3:.1f} ms/step, {summary.ns_per_day:.4f} ns/day "
          f"(after a first call of {summary.setup_s:.1f} s), "
          f"final T {summary.temperature[-1]:.0f} K")
    if args.summary:
        with open(args.summary, "w") as fh:
            json.dump(summary.as_dict(), fh, indent=1)


def run_lazy(name: str, argv: Sequence[str]):
    """`matris train|convert ...`: import the module only now and hand it the arguments."""
    module_name = LAZY[name][0]
    try:
        module = importlib.import_module(f".{module_name}", __package__)
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.{module_name}":
            raise
        sys.exit(f"matris {name}: matris.{module_name} is not available in this installation")
    module.main(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns 0 (errors exit with a message).  Run as a
    program (argv None) it first re-executes itself with the malloc tunables of its workload
    (`matris.runtime`: training or inference)."""
    if argv is None:
        reexec_with_tunables("training" if sys.argv[1:2] == ["train"] else "inference")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LAZY:
        run_lazy(argv[0], argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    handlers = {"predict": run_predict, "eval": run_eval, "relax": run_relax, "md": run_md_command}
    try:
        handlers[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"matris {args.command}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
