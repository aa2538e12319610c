"""Low-light enhancement and denoising U-Net trained with ``AttiqaLoss`` (``attiqa-enhance``)."""
