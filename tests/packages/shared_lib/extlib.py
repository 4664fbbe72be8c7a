def suffix() -> str:
    return "(from an external package dir)"
