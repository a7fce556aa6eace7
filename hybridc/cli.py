"""`hybridc describe | check | fmt | schema | compile | import-hf | export-hf | train | plot | sweep`.

Exit codes: 0 ok, 1 invalid model, 2 usage."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .errors import BackendError, HybridcError, UsageError as _Usage

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    p = Path(path)
    if not p.is_file():
        raise _Usage(f"no such file: {path}")
    return p.read_text(), str(p)


def _load(path: str):
    from .resolve import load

    text, name = _read(path)
    return load(text, name)


def cmd_describe(a) -> int:
    from .summary import describe

    if a.context < 0:
        raise _Usage("--context must be >= 0")
    model = _load(a.file)
    info = describe(model, context=a.context, dtype=a.dtype)
    if a.kernels:
        info["kernels"] = _kernel_plans(model)
    if a.json:
        print(json.dumps(info, indent=2))
    else:
        from .render import print_describe

        print_describe(info)
    return EXIT_OK


def cmd_check(a) -> int:
    bad = 0
    for f in a.files:
        try:
            _load(f)
        except HybridcError as e:
            print(e.render(), file=sys.stderr)
            bad += 1
    if not bad:
        print("ok" if len(a.files) == 1 else f"{len(a.files)} files ok")
    return EXIT_INVALID if bad else EXIT_OK


def cmd_fmt(a) -> int:
    from .canonical import dumps

    sys.stdout.write(dumps(_load(a.file)))
    return EXIT_OK


def cmd_schema(a) -> int:
    from .ir import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_compile(a) -> int:
    from . import registry as backends

    model = _load(a.file)
    be = backends.get(a.backend)
    if a.check:
        info = be.check(model)
        print(f"output shape {tuple(info['output_shape'])}, {info['params']:,} parameters, forward {info['seconds'] * 1e3:.1f} ms")
        return EXIT_OK
    code = be.emit(model)
    if a.output:
        Path(a.output).write_text(code)
    else:
        sys.stdout.write(code)
    return EXIT_OK


def cmd_import_hf(a) -> int:
    from . import hf

    if not Path(a.path).exists():
        raise _Usage(f"no such checkpoint directory or config.json: {a.path}")
    text = hf.convert_checkpoint(a.path, a.weights) if a.weights else hf.import_hf(a.path)
    if a.output:
        Path(a.output).write_text(text)
        print(f"wrote {a.output}" + (f" and {a.weights}" if a.weights else ""), file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_export_hf(a) -> int:
    from . import hf
    from .weights import _read as read_weights

    model = _load(a.file)
    if not Path(a.weights).is_file():
        raise _Usage(f"no such weights file: {a.weights}")
    out = hf.save_hf(read_weights(a.weights), model, a.output, model_type=a.model_type, dtype=a.dtype)
    print(f"wrote {out / 'config.json'} and {out / 'model.safetensors'}", file=sys.stderr)
    return EXIT_OK


def _kernel_plans(model) -> dict:
    """Per installed backend, the kernel each mixer kind runs on each device; the frameworks load only here."""
    from . import registry

    usable = [name for name, ok in registry.backends().items() if ok]
    if not usable:
        raise _Usage("--kernels needs a backend: pip install 'hybridc[torch]' or 'hybridc[jax]'")
    plans = {}
    for name in usable:
        try:
            plans[name] = registry.get(name).kernels(model)
        except (AttributeError, ValueError) as e:  # a backend without the method; a bad HYBRIDC_KERNEL
            raise _Usage(f"--kernels: {name} backend: {e}") from None
    return plans


def _parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybridc", description="A compiler for hybrid SSM/attention sequence models.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("describe", help="schedule, parameters, inference state, FLOPs")
    d.add_argument("file", help=".hyb file, or - for stdin")
    d.add_argument("--json", action="store_true", help="print a JSON dict")
    d.add_argument("--context", type=int, default=4096, help="context length for the state and FLOPs (default 4096)")
    d.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    d.add_argument("--kernels", action="store_true",
                   help="also list the kernel each layer kind runs per backend and device (imports the backends)")
    d.set_defaults(fn=cmd_describe)
    c = sub.add_parser("check", help="validate; print every error")
    c.add_argument("files", nargs="+")
    c.set_defaults(fn=cmd_check)
    f = sub.add_parser("fmt", help="print the canonical text")
    f.add_argument("file")
    f.set_defaults(fn=cmd_fmt)
    s = sub.add_parser("schema", help="the IR's JSON schema")
    s.set_defaults(fn=cmd_schema)
    k = sub.add_parser("compile", help="emit a Python module for a backend")
    k.add_argument("file")
    k.add_argument("--backend", default="torch")
    k.add_argument("-o", "--output", help="write the module here (default: stdout)")
    k.add_argument("--check", action="store_true", help="build, run one forward, print shape, parameters, time")
    k.set_defaults(fn=cmd_compile)
    i = sub.add_parser("import-hf", help="a Hugging Face checkpoint's config as .hyb (and its tensors as a weights file)")
    i.add_argument("path", help="checkpoint directory (config.json + safetensors) or a config.json")
    i.add_argument("-o", "--output", help="write the .hyb here (default: stdout)")
    i.add_argument("--weights", metavar="OUT.safetensors",
                   help="also convert the checkpoint's tensors into a hybridc weights file (hybridc.load_weights)")
    i.set_defaults(fn=cmd_import_hf)
    e = sub.add_parser("export-hf", help="a .hyb model and its weights as a checkpoint transformers loads")
    e.add_argument("file", help=".hyb file")
    e.add_argument("--weights", required=True, help="hybridc weights file (hybridc.save_weights)")
    e.add_argument("-o", "--output", required=True, help="output directory (config.json, model.safetensors)")
    e.add_argument("--model-type", help="the transformers family (default: the model's name, else the first that fits)")
    e.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="tensor dtype (default: the weights' own)")
    e.set_defaults(fn=cmd_export_hf)
    wanted = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    from .train import COMMANDS  # the package alone: its modules are imported only when they are the command

    for name, (module, help) in COMMANDS.items():
        if name == wanted:
            importlib.import_module(f"{__package__}.train.{module}").add_parser(sub)
        else:
            sub.add_parser(name, help=help)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # we use none; looking them up costs startup time
    args = _parser(argv).parse_args(argv)  # usage errors exit 2
    try:
        return args.fn(args)
    except _Usage as e:
        print(f"hybridc: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_USAGE if e.pos is None else EXIT_INVALID
    except HybridcError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
