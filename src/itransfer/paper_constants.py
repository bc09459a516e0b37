"""The paper's task-selection constants (§2.4, Appendix A, Tables 1–2).

They are the defaults of :class:`itransfer.config.SelectionConfig`; a user who wants another
split overrides them in YAML rather than editing this file.
"""

from __future__ import annotations

# Table 1: the 58 training ("seen") categories, spelled as in SNI's task files.
SEEN_CATEGORIES: tuple[str, ...] = (
    "Text Categorization",
    "Speaker Identification",
    "Question Generation",
    "Sentiment Analysis",
    "Misc.",
    "Question Answering",
    "Text Matching",
    "Program Execution",
    "Summarization",
    "Question Understanding",
    "Fact Verification",
    "Gender Classification",
    "Information Extraction",
    "Poem Generation",
    "Sentence Composition",
    "Story Composition",
    "Discourse Connective Identification",
    "Named Entity Recognition",
    "Textual Entailment",
    "Text Completion",
    "Wrong Candidate Generation",
    "Commonsense Classification",
    "Paraphrasing",
    "Dialogue Generation",
    "Explanation",
    "Coherence Classification",
    "Linguistic Probing",
    "Pos Tagging",
    "Stereotype Detection",
    "Punctuation Error Detection",
    "Text Simplification",
    "Word Semantics",
    "Sentence Ordering",
    "Code to Text",
    "Fill in The Blank",
    "Text Quality Evaluation",
    "Answer Verification",
    "Intent Identification",
    "Dialogue State Tracking",
    "Text to Code",
    "Number Conversion",
    "Spam Classification",
    "Word Relation Classification",
    "Stance Detection",
    "Speaker Relation Classification",
    "Grammar Error Detection",
    "Preposition Prediction",
    "Negotiation Strategy Detection",
    "Style Transfer",
    "Discourse Relation Classification",
    "Question Decomposition",
    "Sentence Perturbation",
    "Sentence Compression",
    "Entity Relation Classification",
    "Translation",
    "Sentence Expansion",
    "Entity Generation",
    "Toxic Language Detection",
)

# Table 2: the 11 held-out ("unseen") categories.
UNSEEN_CATEGORIES: tuple[str, ...] = (
    "Coreference Resolution",
    "Data to Text",
    "Question Rewriting",
    "Title Generation",
    "Dialogue Act Recognition",
    "Answerability Classification",
    "Keyword Tagging",
    "Overlap Extraction",
    "Word Analogy",
    "Cause Effect Classification",
    "Grammar Error Correction",
)

# Appendix A: tasks from these domains are held out of training (domain generalization set).
EVALUATION_DOMAINS: tuple[str, ...] = (
    "Healthcare",
    "Social Media",
    "Social Media -> Twitter",
    "Social Media -> Reddit",
    "Sports",
    "Animals",
    "Reviews -> Books",
    "Reviews -> Trip Advisor",
    "Reviews -> Restaurants",
    "Reviews -> Music",
    "Public Places -> Restaurants",
    "Scientific Research Papers",
)

# Appendix A: tasks built from these sources are held out of training (adversarial set).
ADVERSARIAL_SOURCES: tuple[str, ...] = (
    "anli",
    "paws",
    "hans",
    "hellaswag",
    "codah",
    "adversarial_qa",
)

# SNI marks synthetically generated tasks with the source "Synthetic".
SYNTHETIC_SOURCES: tuple[str, ...] = ("synthetic",)

LANGUAGES: tuple[str, ...] = ("English",)

# 100 test + 40 few-shot instances (§2.4).
MIN_EVAL_INSTANCES = 140

# Paper's reported task counts, for the report and sanity checks on the full benchmark.
PAPER_NUM_SEEN_TASKS = 619
PAPER_NUM_UNSEEN_TASKS = 93
