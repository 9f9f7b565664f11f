"""The MONAI Label app that serves medsr's SR bundles (folder ``pipeline/label_app``).

MONAI Label loads ``main.py`` in this folder by path; the rest are modules:
``env`` builds the server's own virtual environment, ``models`` reads the bundles (no MONAI Label import),
``sr_task`` is the infer task (runs inside that env), ``server`` starts and stops the server from the main
env, ``commands`` adds ``medsr label …``. Importing this package imports nothing else.
"""
