"""A learned face-swap generator: a source of fakes for the detector's training.

A DeepFaceLab-style swapping autoencoder, written from the method's published description
(Perov et al., "DeepFaceLab: Integrated, flexible and extensible face-swapping framework",
2020), no code copied: one encoder shared by all faces and one decoder per identity, trained
to rebuild each identity's aligned faces from randomly warped copies. Fed another person's
face, a decoder draws its own identity with that face's pose and expression: a real swap.
``tools.sbi.fit_head --learned-swaps`` blends its swaps into real crops as pseudo-fakes.
"""
