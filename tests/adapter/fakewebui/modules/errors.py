reported: list[str] = []


def report(message: str, *, exc_info: bool = False) -> None:
    import traceback

    reported.append(message + ("\n" + traceback.format_exc() if exc_info else ""))
