"""Reading jaxprs in tests: the equations of a primitive, nested jaxprs included."""


def find(jaxpr, primitive: str) -> list:
    """The equations of `primitive` in `jaxpr` and every jaxpr nested in its equations."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            found.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr wraps a Jaxpr
                if hasattr(sub, "eqns"):
                    found += find(sub, primitive)
    return found


def count(jaxpr, primitive: str) -> int:
    """How often `primitive` occurs in `jaxpr`, nested jaxprs included."""
    return len(find(jaxpr, primitive))
