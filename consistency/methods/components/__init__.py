"""Pieces several methods share: the consistency-model trainer of CD/CT/iCT, trained sets and label dropout,
the score-distillation networks, teachers, optimizers. A component never imports a method module."""
