"""The paper's findings as data: what it claims, the number it reports, and how we recompute it.

Mueller, Dredze & Andrews, "Multi-Task Transfer Matters During Instruction-Tuning". Numbers
are copied from the text (§3.1, §3.2, §5.1); claims the paper makes only from a plot are
directions (which is lower), since the plotted values cannot be read back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FindingKind = Literal["correlation", "direction"]


@dataclass(frozen=True)
class Finding:
    id: str
    paper_section: str  # the paper's numbering, e.g. "3.1"
    section: str  # the key of the section (itransfer.schema) whose analysis it reads
    figure: str
    claim: str
    kind: FindingKind
    paper_value: float | None  # Spearman's rho for correlations; None for directions
    paper_p: float | None
    paper_text: str  # the paper's result as shown in the report
    how_to_compute: str


PAPER_FINDINGS: tuple[Finding, ...] = (
    Finding(
        id="3.1-it-harms-transfer", paper_section="3.1", section="transfer", figure="1 (left)",
        claim="Instruction tuning harms few-shot fine-tuning transfer to unseen tasks (loss), "
              "with and without exemplars in fine-tuning",
        kind="direction", paper_value=None, paper_p=None,
        paper_text="IT fine-tune loss > pre-trained at every k > 0, with and without exemplars",
        how_to_compute="Mean unseen-task test loss after k-shot LoRA of the instruction-tuned "
                       "and the pre-trained model at each k > 0, for each fine-tuning context "
                       "run (none, exemplars); per context a paired Wilcoxon test over tasks on "
                       "the loss averaged over k > 0. Reproduces when IT is worse at every "
                       "(context, k) and every context's test has p < 0.05.",
    ),
    Finding(
        id="3.1-it-harms-transfer-rouge", paper_section="3.1", section="transfer",
        figure="1 (left)",
        claim="Instruction tuning harms few-shot fine-tuning transfer to unseen tasks "
              "(ROUGE-L), with and without exemplars in fine-tuning",
        kind="direction", paper_value=None, paper_p=None,
        paper_text="pre-trained models adapt \"with higher accuracy\": IT ROUGE-L lower at "
                   "k > 0",
        how_to_compute="As the loss finding, on the mean ROUGE-L of the LoRA-tuned models' "
                       "greedy generations (IT lower is harm).",
    ),
    Finding(
        id="3.1-it-improves-icl", paper_section="3.1", section="transfer", figure="1 (left)",
        claim="ICL improves through instruction tuning despite the loss of transfer",
        kind="direction", paper_value=None, paper_p=None,
        paper_text="IT ICL loss < pre-trained ICL loss",
        how_to_compute="Mean unseen-task ICL test loss (3 exemplars) of the instruction-tuned "
                       "vs the pre-trained model; paired Wilcoxon test over tasks.",
    ),
    Finding(
        id="3.1-ft-icl-correlation", paper_section="3.1", section="transfer",
        figure="1 (right)",
        claim="Per-task few-shot fine-tuning loss correlates with ICL loss",
        kind="correlation", paper_value=0.936, paper_p=4.96e-42,
        paper_text="Spearman ρ = 0.936 (p = 4.96e-42, 93 tasks)",
        how_to_compute="Spearman's rho across unseen tasks between the IT model's 5-shot LoRA "
                       "test loss (no context) and its ICL test loss; bootstrap CI over tasks.",
    ),
    Finding(
        id="3.2-less-data-helps", paper_section="3.2", section="data_limits",
        figure="2 (left)",
        claim="Less data per task improves both ICL and fine-tuning transfer",
        kind="direction", paper_value=None, paper_p=None,
        paper_text="smallest limit has lower ICL and FT loss than the largest",
        how_to_compute="Mean ICL loss and 5-shot fine-tuning loss of the smallest-limit model "
                       "minus those of the largest-limit model (both should be negative); a "
                       "paired Wilcoxon test over tasks for each.",
    ),
    Finding(
        id="3.2-delta-correlation", paper_section="3.2", section="data_limits",
        figure="2 (right)",
        claim="Per-task changes in fine-tuning loss correlate with changes in ICL loss",
        kind="correlation", paper_value=0.705, paper_p=6.31e-15,
        paper_text="Spearman ρ = 0.705 (p = 6.31e-15), 5,000 → 50 per task",
        how_to_compute="Spearman's rho across unseen tasks between Δ 5-shot LoRA loss and "
                       "Δ ICL loss from the first to the second model of `data_limits.delta`.",
    ),
    Finding(
        id="4-proportional-best", paper_section="4", section="samplers", figure="3 (left)",
        claim="Proportional sampling has the lowest seen-task test loss and unseen ICL loss",
        kind="direction", paper_value=None, paper_p=None,
        paper_text="proportional ranks first on both",
        how_to_compute="Among the samplers of Figure 3 (proportional, uniform and the two "
                       "reverse-annealing runs with the lowest mean seen-task validation loss; "
                       "DWA and the other runs are reported apart), rank by mean seen-task test "
                       "loss and by mean unseen ICL loss; proportional should rank first on "
                       "both, and stay first in at least 95% of bootstrap resamples of the "
                       "tasks.",
    ),
    Finding(
        id="5.1-early-phase-correlation", paper_section="5.1", section="trajectory",
        figure="4 (centre)",
        claim="In the first phase of IT, FT and ICL changes are only weakly correlated",
        kind="correlation", paper_value=0.245, paper_p=0.019,
        paper_text="Spearman ρ = 0.245 (p = 0.019), steps 0 → 50k",
        how_to_compute="Spearman's rho between per-task Δ 5-shot LoRA loss and Δ ICL loss "
                       "from step 0 (pre-trained) to the phase split step. Weak means ρ < 0.4, "
                       "shown by a one-sided bootstrap bound below 0.4 or by a paired bootstrap "
                       "over tasks putting it significantly below the late phase's ρ.",
    ),
    Finding(
        id="5.1-late-phase-correlation", paper_section="5.1", section="trajectory",
        figure="4 (right)",
        claim="After the first phase, FT and ICL changes are much more tightly correlated",
        kind="correlation", paper_value=0.621, paper_p=None,
        paper_text="Spearman ρ = 0.621, steps 50k → end (higher than the early phase)",
        how_to_compute="Spearman's rho between per-task Δ 5-shot LoRA loss and Δ ICL loss "
                       "from the phase split step to the final step; should be significant and "
                       "exceed the early phase's rho (paired bootstrap over tasks of the "
                       "difference, CI above 0).",
    ),
    Finding(
        id="5.1-icl-improves-throughout", paper_section="5.1", section="trajectory",
        figure="4 (left)",
        claim="ICL improves throughout instruction tuning (early stopping does not help)",
        kind="direction", paper_value=None, paper_p=None,
        paper_text="ICL loss decreases at every checkpoint",
        how_to_compute="Mean unseen ICL loss at each trajectory step (step 0 = pre-trained); "
                       "between every two consecutive checkpoints a paired Wilcoxon test over "
                       "tasks, each of which must show a decrease.",
    ),
    Finding(
        id="5.1-forgetting-then-recovery", paper_section="5.1", section="trajectory",
        figure="4 (left)",
        claim="Fine-tuning transfer first degrades, then improves with continued training",
        kind="direction", paper_value=None, paper_p=None,
        paper_text="FT loss rises 0 → split step, then falls to the end",
        how_to_compute="Mean 5-shot LoRA loss at step 0, the phase split step and the final "
                       "step: should rise then fall, each change with a paired Wilcoxon test.",
    ),
    Finding(
        id="5.2-mixing-reduces-forgetting", paper_section="5.2", section="mixing",
        figure="4 (left)",
        claim="Mixing in unsupervised data reduces forgetting (lower fine-tuning loss)",
        kind="direction", paper_value=None, paper_p=None,
        paper_text="with mixing: lower FT loss throughout training",
        how_to_compute="Mean 5-shot LoRA loss with vs without mixing at each common step > 0, "
                       "with a paired Wilcoxon test over tasks at each.",
    ),
    Finding(
        id="5.2-mixing-improves-icl", paper_section="5.2", section="mixing", figure="4 (left)",
        claim="Mixing in unsupervised data improves ICL",
        kind="direction", paper_value=None, paper_p=None,
        paper_text="with mixing: lower ICL loss at the end of training",
        how_to_compute="Mean unseen ICL loss with vs without mixing at each common step > 0, "
                       "with a paired Wilcoxon test over tasks at each.",
    ),
)


def findings_for(section: str) -> tuple[Finding, ...]:
    return tuple(finding for finding in PAPER_FINDINGS if finding.section == section)
