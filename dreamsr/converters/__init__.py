"""Released-weight converters: ``dreamsr weights convert --from sr3|idm|resshift``, one module per family.

- :mod:`dreamsr.converters.sr3`: SR3's / DREAM's ``GaussianDiffusion`` state dicts, both directions;
- :mod:`dreamsr.converters.idm`: IDM's ``*_gen.pth``;
- :mod:`dreamsr.converters.resshift`: ResShift's UNet file plus ``autoencoder_vq_f4.pth``.

They map a released file's keys onto a family's network and write a checkpoint, so they sit above
:mod:`dreamsr.checkpoint` (which itself imports :mod:`dreamsr.families`): every import here points down. What a
released file *is* (its layout) is :mod:`dreamsr.families.released`, which imports no converter.
"""
