"""Evaluation: scoring clips (inference), the metric protocol (metrics, roc: AUC, DeLong,
Youden), prediction files, paired comparisons, cross-validation reports and attention plots."""
