"""DScribe's GTO SOAP power spectrum and its derivatives, compiled with numba.

DScribe defines the descriptor; this module evaluates the same numbers faster
(DScribe's analytical derivative costs ~30 µs per neighbour pair, most of a
molecular-dynamics step). The expansion of one smeared atom at ``r`` (relative
to the centre) in the GTO basis of DScribe, ``g_nl(x) = sum_a beta_lna x^l
exp(-alpha_la x^2)`` (alphas and betas from :meth:`dscribe.descriptors.SOAP.
get_basis_gto`), integrated over all space, has a closed form:

    c_nlm(r) = S_lm(r) R_nl(|r|^2),
    R_nl(rho) = sum_a beta_lna B_la exp(-gamma_la rho),
    gamma_la = alpha_la / (1 + 2 sigma^2 alpha_la),
    B_la = 4 pi sqrt(pi) / (2^(l+2) sigma^(2l) (alpha_la + 1/(2 sigma^2))^(l+3/2)),

from ``exp(r.x / sigma^2) = 4 pi sum_lm i_l(|r||x|/sigma^2) Y_lm Y_lm`` and
``int_0^inf x^(l+2) exp(-p x^2) i_l(q x) dx = sqrt(pi) q^l exp(q^2/4p) /
(2^(l+2) p^(l+3/2))``; ``S_lm(r) = |r|^l Y_lm(r_hat)`` are the real regular
solid harmonics (polynomials, so smooth at ``r = 0``). The power spectrum is
``P_(Zn)(Z'n')l = pi sqrt(8 / (2l+1)) sum_m c^Z_nlm c^Z'_n'lm``, stored in
DScribe's layout (species pairs ``Z <= Z'``; in each block ``l`` slowest, then
``n``, then ``n'``, with ``n <= n'`` when ``Z = Z'``). The centre atom itself
contributes to ``l = 0`` only.
"""

from __future__ import annotations

from math import factorial

import numba as nb
import numpy as np

from ._fork_safe import fork_safe

__all__ = ["GTOBasis"]

#: Centres whose full (l, x, y) power spectrum is held at once.
SPECTRUM_CHUNK = 1024


class GTOBasis:
    """Constants of DScribe's GTO SOAP and the feature layout.

    Parameters
    ----------
    alphas, betas : ndarray
        DScribe's ``_alphas`` (l_max+1, n_max) and ``_betas`` (l_max+1, n_max, n_max),
        private attributes of its SOAP object (set by ``get_basis_gto``); a
        DScribe release that changed them would show in the engine-equality
        tests (``tests/test_descriptors.py``).
    sigma : float
        Gaussian smearing in Å.
    n_species : int
        Number of species (sorted by atomic number, as DScribe orders them).
    pair_weights : ndarray of shape (n_features,)
        Factor applied to each DScribe feature (``sqrt(2)`` on entries stored
        once for two ordered pairs).
    """

    def __init__(self, alphas, betas, sigma: float, n_species: int, pair_weights):
        alphas = np.asarray(alphas, dtype=float)
        betas = np.asarray(betas, dtype=float)
        self.l_max = alphas.shape[0] - 1
        self.n_max = alphas.shape[1]
        self.n_species = int(n_species)
        deg = np.arange(self.l_max + 1)[:, None]
        p = alphas + 1.0 / (2.0 * sigma**2)
        prefactor = (
            4.0
            * np.pi
            * np.sqrt(np.pi)
            / (2.0 ** (deg + 2) * sigma ** (2 * deg) * p ** (deg + 1.5))
        )
        self.gamma = np.ascontiguousarray(alphas / (1.0 + 2.0 * sigma**2 * alphas))
        self.radial = np.ascontiguousarray(betas * prefactor[:, None, :])  # (deg, n, a)
        self.harmonic_norm = _harmonic_norms(self.l_max)
        self.spectrum_prefactor = np.pi * np.sqrt(8.0 / (2 * np.arange(self.l_max + 1) + 1))
        # Feature f <-> (deg, row x = s n, column y = s' n'), DScribe's order.
        ls, xs, ys = [], [], []
        n_max = self.n_max
        for a in range(self.n_species):
            for b in range(a, self.n_species):
                for li in range(self.l_max + 1):
                    for n in range(n_max):
                        for m in range(n if a == b else 0, n_max):
                            ls.append(li)
                            xs.append(a * n_max + n)
                            ys.append(b * n_max + m)
        self.feature_l = np.array(ls)
        self.feature_x = np.array(xs)
        self.feature_y = np.array(ys)
        self.feature_weight = np.asarray(pair_weights, dtype=float)
        if len(self.feature_weight) != len(ls):
            raise ValueError("pair_weights do not match the GTO feature layout")

    def self_term(self) -> np.ndarray:
        """Coefficients ``c_n00`` of the centre atom on itself, (n_max,)."""
        return self.radial[0].sum(axis=1) * self.harmonic_norm[0, 0]

    # -------------------------------------------------------------- expansion
    def expand(self, starts, species, vectors, centre_species) -> np.ndarray:
        """Density coefficients of each centre, (n_centres, n_species * n_max, n_lm).

        ``starts`` (n_centres + 1) delimit each centre's rows in ``species``
        (species index of each neighbour) and ``vectors`` (r_j - r_i).
        """
        c = fork_safe(_expand)(
            starts,
            species,
            vectors,
            self.n_species,
            self.radial,
            self.gamma,
            self.harmonic_norm,
        )
        centres = np.arange(len(centre_species))
        rows = np.asarray(centre_species) * self.n_max
        for n, value in enumerate(self.self_term()):
            c[centres, rows + n, 0] += value
        return c

    def power_spectrum(self, c: np.ndarray) -> np.ndarray:
        """Weighted power spectrum in DScribe's layout, (n_centres, n_features)."""
        out = np.empty((c.shape[0], len(self.feature_l)))
        for start in range(0, c.shape[0], SPECTRUM_CHUNK):
            part = slice(start, start + SPECTRUM_CHUNK)
            full = self.full_spectrum(c[part])
            out[part] = full[:, self.feature_l, self.feature_x, self.feature_y]
        return out * self.feature_weight

    def full_spectrum(self, c: np.ndarray) -> np.ndarray:
        """``P[i, l, x, y]`` for all ordered pairs of rows x, y."""
        n = c.shape[0]
        rows = c.shape[1]
        full = np.empty((n, self.l_max + 1, rows, rows))
        for li in range(self.l_max + 1):
            block = c[:, :, li * li : (li + 1) ** 2]
            full[:, li] = self.spectrum_prefactor[li] * np.einsum("ixm,iym->ixy", block, block)
        return full

    def coefficient_gradient(self, c: np.ndarray, spectrum_gradient: np.ndarray) -> np.ndarray:
        """``d eps / d c`` from ``d eps / d p`` (weighted DScribe layout)."""
        n, rows = c.shape[0], c.shape[1]
        half = 0.5 * spectrum_gradient * self.feature_weight
        g = np.zeros((n, self.l_max + 1, rows, rows))
        # each feature is one (l, x, y); a diagonal x = y gets both halves
        g[:, self.feature_l, self.feature_x, self.feature_y] = half
        g += g.transpose(0, 1, 3, 2)
        h = np.empty_like(c)
        for li in range(self.l_max + 1):
            sl = slice(li * li, (li + 1) ** 2)
            h[:, :, sl] = (
                2.0 * self.spectrum_prefactor[li] * np.einsum("ixy,iym->ixm", g[:, li], c[:, :, sl])
            )
        return h

    def contract(self, starts, species, vectors, h) -> np.ndarray:
        """``d eps_i / d r_j`` of each pair, (n_pairs, 3), for ``h = d eps / d c``
        (pairs per centre as in :meth:`expand`)."""
        return fork_safe(_contract)(
            starts,
            species,
            vectors,
            h,
            self.n_max,
            self.radial,
            self.gamma,
            self.harmonic_norm,
        )

    def normalised_derivatives(
        self, starts, species, vectors, c, q, norm, pair_row, self_row, n_rows
    ) -> tuple[np.ndarray, np.ndarray]:
        """Derivatives of the normalised descriptors ``q_i = p_i / |p_i|``.

        Pairs are given per centre (``starts``, ``species``, ``vectors`` as in
        :meth:`expand`). Each pair's ``d q_i / d r_j`` is added to row
        ``pair_row`` of the result, the centre's own derivative (minus the sum
        over its pairs) to row ``self_row[i]``, so that images of one atom can
        share a row.

        Returns
        -------
        dq_dr : ndarray of shape (n_rows, 3, n_features)
        dq_dstrain : ndarray of shape (n_centres, 3, 3, n_features)
            ``sum_j (r_j - r_i)[a] d q_i / d r_j[b]``.
        """
        return fork_safe(_normalised_derivatives)(
            starts,
            species,
            vectors,
            c,
            q,
            1.0 / norm,
            pair_row,
            self_row,
            n_rows,
            self.n_max,
            self.radial,
            self.gamma,
            self.harmonic_norm,
            self.feature_l,
            self.feature_x,
            self.feature_y,
            self.feature_weight * self.spectrum_prefactor[self.feature_l],
        )


def _harmonic_norms(l_max: int) -> np.ndarray:
    """Normalisation of the real spherical harmonics, ``sqrt(2)`` included for m > 0."""
    norm = np.zeros((l_max + 1, l_max + 1))
    for deg in range(l_max + 1):
        for m in range(deg + 1):
            value = np.sqrt((2 * deg + 1) / (4 * np.pi) * factorial(deg - m) / factorial(deg + m))
            norm[deg, m] = value * (np.sqrt(2.0) if m > 0 else 1.0)
    return norm


@nb.njit(cache=True)
def _solid_harmonics(x, y, z, l_max, norm, s, ds, work):
    """Real regular solid harmonics ``|r|^l Y_lm`` (index l*l + l + m) and gradients.

    With ``|r|^l P_l^m(cos theta) = Q_l^m(z, rho) (|r| sin theta)^m`` (Condon-Shortley
    phase), ``(|r| sin theta)^m cos(m phi) + i ... = (x + iy)^m = c_m + i s_m`` and
    ``(l-m) Q_l^m = (2l-1) z Q_(l-1)^m - (l+m-1) rho Q_(l-2)^m``,
    ``Q_m^m = -(2m-1) Q_(m-1)^(m-1)``, ``Q_0^0 = 1``; the derivatives of ``Q`` in
    ``z`` and ``rho = |r|^2`` are carried through the same recurrence.
    """
    rho = x * x + y * y + z * z
    nl = l_max + 1
    q = work[0:nl]
    qz = work[nl : 2 * nl]
    qr = work[2 * nl : 3 * nl]
    cm = work[3 * nl]
    sm = work[3 * nl + 1]
    cm[0] = 1.0
    sm[0] = 0.0
    for m in range(1, nl):
        cm[m] = x * cm[m - 1] - y * sm[m - 1]
        sm[m] = x * sm[m - 1] + y * cm[m - 1]
    q[0, 0] = 1.0
    for m in range(nl):
        if m > 0:
            q[m, m] = -(2 * m - 1) * q[m - 1, m - 1]
        qz[m, m] = 0.0
        qr[m, m] = 0.0
        for deg in range(m + 1, nl):
            a = (2 * deg - 1) * z
            b = (deg + m - 1) * rho
            prev = q[deg - 1, m]
            prev2 = q[deg - 2, m] if deg - 2 >= m else 0.0
            prev_z = qz[deg - 1, m]
            prev2_z = qz[deg - 2, m] if deg - 2 >= m else 0.0
            prev_r = qr[deg - 1, m]
            prev2_r = qr[deg - 2, m] if deg - 2 >= m else 0.0
            inv = 1.0 / (deg - m)
            q[deg, m] = (a * prev - b * prev2) * inv
            qz[deg, m] = ((2 * deg - 1) * prev + a * prev_z - b * prev2_z) * inv
            qr[deg, m] = (a * prev_r - (deg + m - 1) * prev2 - b * prev2_r) * inv
    for deg in range(nl):
        base = deg * deg + deg
        for m in range(deg + 1):
            nq = norm[deg, m] * q[deg, m]
            dz = norm[deg, m] * (qz[deg, m] + 2.0 * z * qr[deg, m])
            dxr = norm[deg, m] * 2.0 * x * qr[deg, m]
            dyr = norm[deg, m] * 2.0 * y * qr[deg, m]
            if m == 0:
                s[base] = nq
                ds[base, 0] = dxr
                ds[base, 1] = dyr
                ds[base, 2] = dz
            else:
                c_prev = cm[m - 1]
                s_prev = sm[m - 1]
                s[base + m] = nq * cm[m]
                ds[base + m, 0] = dxr * cm[m] + nq * m * c_prev
                ds[base + m, 1] = dyr * cm[m] - nq * m * s_prev
                ds[base + m, 2] = dz * cm[m]
                s[base - m] = nq * sm[m]
                ds[base - m, 0] = dxr * sm[m] + nq * m * s_prev
                ds[base - m, 1] = dyr * sm[m] + nq * m * c_prev
                ds[base - m, 2] = dz * sm[m]


@nb.njit(cache=True)
def _radial(rho, radial, gamma, r, dr):
    """``R_nl(rho)`` and ``dR_nl / d rho`` into r, dr of shape (l, n)."""
    nl, n_max, n_a = radial.shape
    for deg in range(nl):
        for a in range(n_a):
            e = np.exp(-gamma[deg, a] * rho)
            ge = -gamma[deg, a] * e
            for n in range(n_max):
                r[deg, n] += radial[deg, n, a] * e
                dr[deg, n] += radial[deg, n, a] * ge


@nb.njit(cache=True)
def _buffers(nl, n_max):
    """Work arrays of one thread: S_lm, grad S_lm, recurrence, R_nl, dR_nl/drho."""
    n_lm = nl * nl
    return (
        np.empty(n_lm),
        np.empty((n_lm, 3)),
        np.empty((3 * nl + 2, nl)),
        np.empty((nl, n_max)),
        np.empty((nl, n_max)),
    )


@nb.njit(cache=True)
def _neighbour_basis(x, y, z, radial, gamma, norm, s, ds, work, r, dr):
    """Angular and radial factors of one neighbour at (x, y, z) into the buffers."""
    _solid_harmonics(x, y, z, radial.shape[0] - 1, norm, s, ds, work)
    r[:] = 0.0
    dr[:] = 0.0
    _radial(x * x + y * y + z * z, radial, gamma, r, dr)


@nb.njit(parallel=True, cache=True)
def _expand(starts, species, vectors, n_species, radial, gamma, norm):
    n_centres = len(starts) - 1
    nl, n_max, _ = radial.shape
    n_lm = nl * nl
    c = np.zeros((n_centres, n_species * n_max, n_lm))
    for i in nb.prange(n_centres):
        s, ds, work, r, dr = _buffers(nl, n_max)
        for k in range(starts[i], starts[i + 1]):
            x, y, z = vectors[k, 0], vectors[k, 1], vectors[k, 2]
            _neighbour_basis(x, y, z, radial, gamma, norm, s, ds, work, r, dr)
            row = species[k] * n_max
            for deg in range(nl):
                for lm in range(deg * deg, (deg + 1) * (deg + 1)):
                    for n in range(n_max):
                        c[i, row + n, lm] += r[deg, n] * s[lm]
    return c


@nb.njit(parallel=True, cache=True)
def _contract(starts, species, vectors, h, n_max, radial, gamma, norm):
    n_centres = len(starts) - 1
    nl = radial.shape[0]
    out = np.empty((len(species), 3))
    for i in nb.prange(n_centres):
        s, ds, work, r, dr = _buffers(nl, n_max)
        for k in range(starts[i], starts[i + 1]):
            x, y, z = vectors[k, 0], vectors[k, 1], vectors[k, 2]
            _neighbour_basis(x, y, z, radial, gamma, norm, s, ds, work, r, dr)
            row = species[k] * n_max
            gx = 0.0
            gy = 0.0
            gz = 0.0
            grho = 0.0
            for deg in range(nl):
                for lm in range(deg * deg, (deg + 1) * (deg + 1)):
                    hr = 0.0
                    hdr = 0.0
                    for n in range(n_max):
                        hv = h[i, row + n, lm]
                        hr += hv * r[deg, n]
                        hdr += hv * dr[deg, n]
                    gx += hr * ds[lm, 0]
                    gy += hr * ds[lm, 1]
                    gz += hr * ds[lm, 2]
                    grho += hdr * s[lm]
            out[k, 0] = gx + 2.0 * x * grho
            out[k, 1] = gy + 2.0 * y * grho
            out[k, 2] = gz + 2.0 * z * grho
    return out


@nb.njit(parallel=True, cache=True)
def _normalised_derivatives(
    starts,
    species,
    vectors,
    c,
    q,
    inv_norm,
    pair_row,
    self_row,
    n_rows,
    n_max,
    radial,
    gamma,
    norm,
    f_l,
    f_x,
    f_y,
    f_scale,
):
    n_centres = len(starts) - 1
    nl = radial.shape[0]
    n_lm = nl * nl
    n_feat = len(f_l)
    out = np.zeros((n_rows, 3, n_feat))
    strain = np.zeros((n_centres, 3, 3, n_feat))
    for i in nb.prange(n_centres):
        s, ds, work, r, dr = _buffers(nl, n_max)
        dc = np.empty((n_max, n_lm, 3))
        dp = np.empty((3, n_feat))
        own = np.zeros((3, n_feat))
        for k in range(starts[i], starts[i + 1]):
            x, y, z = vectors[k, 0], vectors[k, 1], vectors[k, 2]
            _neighbour_basis(x, y, z, radial, gamma, norm, s, ds, work, r, dr)
            for deg in range(nl):
                for lm in range(deg * deg, (deg + 1) * (deg + 1)):
                    for n in range(n_max):
                        radial_part = 2.0 * dr[deg, n] * s[lm]
                        dc[n, lm, 0] = r[deg, n] * ds[lm, 0] + radial_part * x
                        dc[n, lm, 1] = r[deg, n] * ds[lm, 1] + radial_part * y
                        dc[n, lm, 2] = r[deg, n] * ds[lm, 2] + radial_part * z
            row = species[k] * n_max
            # d p / d r_j: only rows of the neighbour's species move
            for f in range(n_feat):
                deg = f_l[f]
                xr = f_x[f]
                yr = f_y[f]
                ax = 0.0
                ay = 0.0
                az = 0.0
                # product rule: the moving factor is whichever row is the neighbour's
                for side in range(2):
                    moving = xr if side == 0 else yr
                    fixed = yr if side == 0 else xr
                    if moving // n_max != species[k]:
                        continue
                    nm = moving - row
                    for lm in range(deg * deg, (deg + 1) * (deg + 1)):
                        cf = c[i, fixed, lm]
                        ax += dc[nm, lm, 0] * cf
                        ay += dc[nm, lm, 1] * cf
                        az += dc[nm, lm, 2] * cf
                dp[0, f] = f_scale[f] * ax
                dp[1, f] = f_scale[f] * ay
                dp[2, f] = f_scale[f] * az
            # d q = (d p - (d p . q) q) / |p|
            dest = pair_row[k]
            for b in range(3):
                along = 0.0
                for f in range(n_feat):
                    along += dp[b, f] * q[i, f]
                for f in range(n_feat):
                    value = (dp[b, f] - along * q[i, f]) * inv_norm[i]
                    out[dest, b, f] += value
                    own[b, f] -= value
                    for a in range(3):
                        strain[i, a, b, f] += vectors[k, a] * value
        dest = self_row[i]
        for b in range(3):
            for f in range(n_feat):
                out[dest, b, f] += own[b, f]
    return out, strain
