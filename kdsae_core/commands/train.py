"""`kdsae train`: Experiment 2, one SAE per (trial, layer), all fed from one forward pass per batch."""

from __future__ import annotations

from pathlib import Path

from ..distributed import make_comm
from ..errors import InvalidParameter
from ..train import PROFILES, SAETrainConfig, Trainer
from ._args import int_list


def _layers(text: str):
    return None if text == "all" else int_list(text)


def _trials(text: str) -> list[str]:
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out:
        raise InvalidParameter("--trial needs at least one trial (A, B, C or a pilot like P7e-04).")
    return out


def register(sub) -> None:
    p = sub.add_parser("train", help="Experiment 2: train SAEs on every requested layer in the three L1 regimes")
    p.add_argument("--trial", type=_trials, default=None, help="trials, comma-separated: A, B, C, pilots like P7e-04 "
                   "(default A,B,C)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="embedded",
                   help="embedded: all-MiniLM-L6-v2 on packaged text, CPU, minutes; paper: Pythia-410M, 300M Pile "
                        "tokens, GPU + hub")
    p.add_argument("--model", help="hub id (EleutherAI/pythia-410m), local model folder, or `embedded`")
    p.add_argument("--layers", type=_layers, default="all", help="`all` or 0-based layers, comma-separated")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--d-sae", type=int, help="latents per SAE")
    size.add_argument("--expansion", type=float, help="latents per SAE as a multiple of d_model")
    p.add_argument("--tokens", type=int, help="training tokens")
    p.add_argument("--n-snapshots", type=int, help="evenly spaced snapshots (the last is `final`)")
    p.add_argument("--batch-tokens", type=int, help="tokens per step (a multiple of --context)")
    p.add_argument("--context", type=int, help="tokens per sequence")
    p.add_argument("--dataset", help="`embedded`, a Hugging Face dataset name, or a local .txt/.jsonl file or folder")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--dtype", choices=["fp32", "bf16"])
    p.add_argument("--lr", type=float)
    p.add_argument("--target-l0", type=float, help="trial C's target mean L0 (default 150)")
    p.add_argument("--seed", type=int)
    p.add_argument("--measure-tokens", type=int, help="fresh tokens `kdsae measure` uses by default")
    p.add_argument("--state-every-tokens", type=int, help="also save a resumable state every N tokens")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.add_argument("--measure", action="store_true", help="measure every checkpoint when training ends")
    p.set_defaults(func=run)


def run(args) -> int:
    overrides = dict(model=args.model, layers=args.layers, trials=args.trial, d_sae=args.d_sae,
                     expansion=args.expansion, tokens=args.tokens, n_snapshots=args.n_snapshots,
                     batch_tokens=args.batch_tokens, context=args.context, dataset=args.dataset, device=args.device,
                     dtype=args.dtype, lr=args.lr, target_l0=args.target_l0, seed=args.seed,
                     measure_tokens=args.measure_tokens, state_every_tokens=args.state_every_tokens)
    cfg = SAETrainConfig.from_profile(args.profile, **overrides)
    if args.layers is None:
        cfg.layers = None
    comm = make_comm(cfg.device)  # several processes under torchrun, else this one
    try:
        Trainer(cfg, args.out, comm=comm).run(resume=args.resume, force=args.force)
    except Exception as e:  # (a stop by signal is a KeyboardInterrupt that every process takes together)
        comm.fail(e)
        raise
    finally:
        comm.close()
    if not comm.is_main:
        return 0
    print(f"kdsae train: run folder {args.out}")
    if args.measure:
        from ..measure import measure_run
        measure_run(args.out)
        print(f"kdsae train: measured into {args.out / 'measurements'}")
    return 0
