"""Weight sharing vs standalone training: do inherited weights rank archs as training alone would?

1. Train the supernet of the space on the default corpus or --data (with the trainer of `nas train`:
   sandwich rule, in-place distillation, a loss at every exit) for --steps steps of
   --batch-size x --seq-len tokens. The run goes to OUT/supernet and is resumed if there.
2. Pick archs: the smallest, the largest, middle archs built on the non-attention
   mixers (ssm, linear_attention, conv, glu, pool) and on sliding_window, of varied sizes,
   and --mixed random archs (default 2) whose mixers vary by layer (what a search returns);
   --mixed all takes every other arch of a space of at most 64 archs instead.
3. Measure each arch's validation loss with the supernet's weights, as they are
   (inherited; no fine-tuning).
4. Train each arch alone from scratch (initialised like the supernet, the prefix of a
   freshly seeded one) for the number of tokens it saw inside the supernet: the largest
   and the smallest run at every step; a middle arch's own weights (its mixer at each
   layer) trained only at the steps where some arch of the sandwich used that mixer at
   that layer, which the trainer counts (`exposure_steps`, averaged over its layers).
   Same batches (the first N of the run's stream), same optimizer, a cosine schedule over
   its N steps, once per peak lr of --standalone-lrs; the best validation loss counts, so
   each arch is compared with a baseline tuned for itself (linear attention wants a lower
   lr than conv). With --extend-lrs N, an arch that does best at the grid's lowest
   (highest) lr also tries half (double) it, up to N times, until its best lr is inside.
   For reference, each arch is also trained alone on the whole budget (standalone@all).
   Results go to OUT/standalone/*.json (or --standalone-dir) and are reused by a rerun
   with the same standalone settings, space, corpus and --eval-batches.
5. Print per arch: tokens seen, inherited and standalone validation loss (nats/token,
   fixed batches of the validation split), the relative gap, and Kendall tau between the
   two rankings, with a 90% bootstrap interval over the archs (and, with --mixed 3 or
   more, tau among the random archs alone: the comparisons a search makes).
   Targets: every inherited loss within 3% of standalone; tau >= 0.8.
6. Print, per arch and layer, how much the inherited loss rises when that layer's mixer
   is removed (made a skip, its FFN kept): which mixers the supernet actually uses.
7. With --finetune-steps 25,50: fine-tune each arch's inherited weights alone for that
   many steps and print tau of those losses against the same references (a cheap
   ranking aid a search could use); and, as its control, the same short training from
   the standalone runs' initialisation ("from scratch").
8. With --few-shot LAYERS: split the supernet on those layers' mixers (few-shot NAS,
   nas.supernet.few_shot) and print tau and gaps of the archs read from their own
   sub-supernet against the whole-budget references, and its mixer ablation.
9. With --reference-seed S: train every arch alone on the whole budget again with seed S
   (initialisation and batches), at its best lr, and print tau between the two
   standalone rankings: how far two trainings of the same archs agree, the ceiling for
   any ranking measured against one of them.
With --family NAMES, those bench archs train at every step beside the sandwich (nas
train --family) and are marked * in the table. --fair, --ffn-per-mixer and
--sandwich-random-mixers train the supernet with those trainer options; the standalone
runs do not depend on them.

Usage: python bench/bench_weight_sharing.py [--steps 800] [--batch-size 8] [--seq-len 64]
       [--out runs/bench_weight_sharing] [--space FILE] [--data PATH] [--eval-batches 32]
       [--distill-weight W] [--homogeneous-share S] [--standalone-lrs 0.001,0.003,0.006]
       [--extend-lrs N] [--no-full-budget] [--family mixed0,mixed1] [--mixed 2|all]
       [--finetune-steps 25,50] [--finetune-lr 0.001] [--fair] [--ffn-per-mixer]
       [--sandwich-random-mixers] [--few-shot 1[,2]] [--few-shot-split-at STEPS]
       [--few-shot-branch | --few-shot-lr LR] [--reference-seed 1]
       [--device cpu|cuda|auto] [--jobs 1]
The README's figures: --space bench/spaces/weight_sharing.yaml --steps 6000
--batch-size 16 --seq-len 64 --distill-weight 0 --no-full-budget (about 60 min on 2 cores:
15 for the supernet, 45 for 30 standalone runs).
"""

from __future__ import annotations

from weight_sharing_args import parse_setup
from weight_sharing_measure import measure
from weight_sharing_report import report

# The bench's parts, one concept each (bench/ is first on sys.path when run as a script):
#   weight_sharing_archs    the archs compared
#   weight_sharing_args     the flags, their checks and the run they set up
#   weight_sharing_measure  the supernet, the standalone runs, every loss
#   weight_sharing_rankings Kendall tau, its bootstrap interval, gaps
#   weight_sharing_report   the table, results.json; weight_sharing_plot the figure


def main() -> None:
    setup = parse_setup(__doc__.split("\n")[0])
    report(setup, measure(setup))


if __name__ == "__main__":
    main()
