"""Scale out on Ray Serve: ``impasto deploy ray`` (needs ``pip install 'impasto[ray]'``).

An application of one ingress deployment (the same ASGI app as ``impasto serve``, whose
``run`` step goes to a model replica: :mod:`impasto.ray.remote`) and one model deployment per
package (:mod:`impasto.ray.replica`), built and deployed by :mod:`impasto.ray.deploy`. This
package imports Ray only where it is used, so its config section loads without it.
"""
