"""Replacing submodules of a model in place."""


def replace_modules(model, replacement):
    """Put ``replacement(module)`` in place of every submodule of ``model`` for which it
    returns a module (None keeps the module); returns how many were replaced.

    Parents hold the new modules under the old attribute names, so state_dict names stay.
    """
    swaps = []
    for parent in model.modules():
        for name, child in parent.named_children():
            new = replacement(child)
            if new is not None:
                swaps.append((parent, name, new))
    # set after walking: replacing children while iterating modules() would skip some
    for parent, name, new in swaps:
        setattr(parent, name, new)
    return len(swaps)
