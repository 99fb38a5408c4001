"""Conv2d with an optional norm applied to its output."""
import megengine.module as M


class Conv2d(M.Conv2d):
    """megengine.module.Conv2d followed by ``norm`` when given. The norm is stored as ``.norm``,
    the official package's layout, so its tensors load by the published names."""

    def __init__(self, *args, norm=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm

    def forward(self, x):
        x = super().forward(x)
        return x if self.norm is None else self.norm(x)
