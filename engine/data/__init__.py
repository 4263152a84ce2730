"""Data: video decoding, manifests, patient-level splits, the one preprocessing path (sector
crop, letterbox, normalisation), clips and their frame cache, datasets and loaders for
evaluation, and the COVID-BLUES manifest builder."""
