r"""Hopfield layers for deep learning: the constructor arguments of ``hflayers`` with the same meaning, plus a
U-Hop (kernelized) option and a choice of separation map.

One forward pass of :class:`Hopfield` is one (or more) step(s) of the modern Hopfield retrieval
dynamics written in the row convention of transformers (App C of the paper):

.. code-block:: text

    R = norm(state), Y = norm(stored), V0 = norm(projection)          # LayerNorms (optional)
    R, Y = Phi(R), Phi(Y)                                              # U-Hop only: feature map, Eq (2.1)
    Q = R W_Q,  K = Y W_K,  V = V0 W_V                                 # projections (optional: "static")
    Q, K = norm_h(Q), norm_h(K)                                        # normalize_hopfield_space (optional)
    A = Sep(beta * Q K^T + mask)                                       # association, per head
    repeat up to update_steps_max times, per head:                     # extra retrieval steps
        Q <- A K;  A = Sep(beta * Q K^T + mask)                        #   (a head stops once A moves <= eps)
    out = act((dropout(A) V) W_O)                                      # heads concatenated, out projection

so the U-Hop layer of Section 3, ``Sep(beta W_K Phi(Xi) W_Q Phi(x)) W_V W_K Xi``, is ``kernel="linear"``:
``Phi`` acts on the state and stored patterns before ``W_Q``, ``W_K``; the values come from the raw
(normalised) projection patterns, as in the official implementation.

Sizes follow ``hflayers``: ``hidden_size`` and ``pattern_size`` are **per head** (the association space has
``num_heads * hidden_size`` dimensions), a *static* pattern is already in the association space of one head and
is shared by every head.  Shapes (``batch_first=True``): stored ``(B, M, stored_pattern_size)``, state
``(B, Q, input_size)``, projection ``(B, M, pattern_projection_size)`` -> output ``(B, Q, output_size)``.
Unbatched 2-D inputs ``(M, d)`` / ``(Q, d)`` are accepted and give a 2-D output.

**Pure retrieval.** With static patterns, no normalisation, no output projection and ``scaling=beta``
(``Hopfield.retrieval(d, beta=...)`` builds exactly this), ``layer((memories, queries, memories))``
returns ``T_K^{update_steps_max + 1}(queries)``, i.e. ``uhop.retrieve(queries, memories, beta=beta,
steps=update_steps_max + 1, kernel=...)``.

**Where we differ from hflayers on purpose** (each is a defect there; the attention chapter of the book lists
them and ``tests/test_hflayers_parity.py`` checks them against hflayers):

* per-head ``scaling`` multiplies whole heads (hflayers multiplies alternating features);
* static patterns with several heads are shared per batch item (hflayers mixes batch items across heads);
* ``concat_bias_pattern=True`` appends its learned key/value patterns (hflayers creates them but never uses them;
  :func:`load_hflayers_state_dict` explains what to do with them);
* a query whose stored patterns are all masked, an empty memory, a mask of another dtype than bool/float, an
  unknown ``association_activation`` or an ``output_size`` that the layer cannot produce raise an error naming
  the argument (hflayers returns NaN, the output bias, or silently ignores the argument);
* ``normalize_*_affine`` defaults to the value of ``normalize_*`` (hflayers asserts when a normalisation is
  switched off without also switching off its affine flag);
* :class:`HopfieldPooling` with ``batch_first=False`` returns ``(B, ...)`` (hflayers flattens across the batch);
* ``input_size`` is always required (hflayers infers it from the data when every pattern is static).

Modules: :mod:`uhop.nn.hopfield` (:class:`Hopfield`, :class:`UHopfield`), :mod:`uhop.nn.learned`
(:class:`HopfieldPooling`, :class:`HopfieldLayer`), :mod:`uhop.nn.walk` (:func:`hopfield_layers`,
:func:`record_stored_patterns`), :mod:`uhop.nn.arguments` (argument checks, :data:`KERNELS`, :data:`INITS`),
:mod:`uhop.nn.inputs` (the forward pass's patterns and masks), :mod:`uhop.nn.properties` (the ``hflayers``
properties); this module gathers the public names.
"""

from __future__ import annotations

from .arguments import INITS, KERNELS
from .hopfield import Hopfield, UHopfield
from .learned import HopfieldLayer, HopfieldPooling
from .walk import hopfield_layers, record_stored_patterns

__all__ = ["Hopfield", "UHopfield", "HopfieldPooling", "HopfieldLayer", "record_stored_patterns",
           "hopfield_layers", "KERNELS", "INITS"]
