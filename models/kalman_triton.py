r"""Fused Triton kernels for the diagonal Kalman filter and RTS smoother, forward and backward.

The model, the filter and the smoother are those of `models.kalman` (its docstring states them);
these are drop-in twins of `kalman_filter_sequential` / `kalman_smoother_sequential`, same
signatures and results. Every (b, d) channel is an independent scalar chain, so one program owns a
block of channels of the flattened (B, D) axis (d fastest: for a fixed t the loads of a warp are
contiguous in a (B, T, D) tensor) and walks the time axis itself, U steps at a time: the loads of a
chunk are all issued before its sequential arithmetic, so a chain waits on memory once per chunk.

Backward (hand-written reverse mode through the same recursions; a bar is d loss / d x, g an
upstream gradient). Filter, one channel, with (a, c, q) the transition into step t (0, mean0, var0
at a start), s = P-_t + R_t, K = P-_t / s, r = y_t - m-_t; walking t = T-1 .. 0 and carrying the
adjoints of the filtered belief of step t from step t + 1:

    bar m+_t = g_m+_t + a_{t+1} bar m-_{t+1},     bar P+_t = g_P+_t + a_{t+1}^2 bar P-_{t+1}
    bar m-_t = g_m-_t + (R/s) bar m+_t,           bar P-_t = g_P-_t + (R r / s^2) bar m+_t + (R/s)^2 bar P+_t
    bar y_t  = K bar m+_t,                        bar R_t  = (P-_t / s)^2 bar P+_t - (P-_t r / s^2) bar m+_t
    bar a = m+_{t-1} bar m-_t + 2 a P+_{t-1} bar P-_t,    bar c = bar m-_t,    bar q = bar P-_t

(where y_t is missing: bar m-_t = g_m-_t + bar m+_t, bar P-_t = g_P-_t + bar P+_t, bar y_t = bar R_t = 0).
bar (a, c, q) is the gradient of (A, b, Q)_{t-1}, or adds to (mean0, var0) at a start, where
(A, b, Q)_{t-1} get none; (A, b, Q)_{T-1} are unused (zero gradient).

Smoother step t, with (a, q) = (A_t, Q_t), or (0, 1) at a cut (the last step and before a start),
p = a^2 P+_t + q, G = P+_t a / p, L = P+_t q / p, e = m^s_{t+1} - a m+_t - b_t:
m^s_t = m+_t + G e, P^s_t = G^2 P^s_{t+1} + L. Reverse mode of a backward-in-time recursion runs
forward in time, t = 0 .. T-1, carrying the adjoints of m^s_t, P^s_t from step t - 1:

    bar m^s_t = g_m^s_t + G_{t-1} bar m^s_{t-1},     bar P^s_t = g_P^s_t + G_{t-1}^2 bar P^s_{t-1}
    bar G = g_G + e bar m^s_t + 2 G P^s_{t+1} bar P^s_t,      bar p = -(G bar G + L bar P^s_t) / p
    bar m+_t = (1 - a G) bar m^s_t,                  bar P+_t = (a bar G + q bar P^s_t) / p + a^2 bar p
    bar A_t = P+_t bar G / p - G m+_t bar m^s_t + 2 a P+_t bar p,   bar b_t = -G bar m^s_t,
    bar Q_t = P+_t bar P^s_t / p + bar p                  (all three zero at a cut).

Each backward recomputes the step from the saved forward outputs (predicted and filtered marginals;
smoothed marginals), so nothing beyond the outputs is stored. The kernels compute in float32, or in
float64 when an input is float64. No value reaches the host and block sizes are fixed (no
autotuning), so both directions can be captured in a CUDA graph after one warm-up call. No double
backward. With TRITON_INTERPRET=1 set before this module is imported, everything runs on CPU
tensors through Triton's interpreter (the tests use it).
"""
import torch
import triton
import triton.language as tl

from models.kalman import FilterResult, SmootherResult, _with_first_step

# Fixed launch settings (no autotuning, so nothing is tried inside a CUDA-graph capture). On an
# H100 at B=32, D=230 the time did not depend on BLOCK (32 to 256); UNROLL 8 was 1.3x faster than 4
# and 2.3x faster than 1 at T=1024, and 16 only 3% faster than 8 for a 4x longer compile
# (docs/benchmarks.md).
BLOCK = 128  # channels a program owns (4 warps, one channel per thread)
UNROLL = 8  # time steps whose loads are issued together (2 under the interpreter, see below)
NUM_WARPS = 4


# Kernel conventions: N = B D channels, program p owns channels p BLOCK .. p BLOCK + BLOCK - 1 of
# the flattened (B, D) axis. A (B, T, D) input X comes with its strides sX (any, 0 for a broadcast
# axis): the program holds one pointer per channel, X + b sX[0] + d sX[2] + t sX[1], and moves it
# by sX[1] per step; (B, T) flags likewise, outputs and saved results are contiguous (B, T, D).
# Steps are taken U at a time: U loads per input first (masked past the ends), then U steps of
# arithmetic. Step indices are compared as (BLOCK,) tensors (`tl.full`) because Triton 3.9's
# interpreter turns `tensor & (scalar comparison)` into int32.

@triton.jit
def _filter_fwd(A, sA, Bt, sB, Q, sQ, Y, sY, R, sR, M0, sM0, V0, sV0, MASK, sMASK, FIRST, sFIRST,
                FM, FV, PM, PV, N, T, D, DT: tl.constexpr, BLOCK: tl.constexpr, U: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = idx < N
    bi, di = (idx // D).to(tl.int64), (idx % D).to(tl.int64)
    pA, pB, pQ = A + bi * sA[0] + di * sA[2], Bt + bi * sB[0] + di * sB[2], Q + bi * sQ[0] + di * sQ[2]
    pY, pR = Y + bi * sY[0] + di * sY[2], R + bi * sR[0] + di * sR[2]
    pMASK, pFIRST = MASK + bi * sMASK[0], FIRST + bi * sFIRST[0]
    pFM, pFV, pPM, pPV = FM + bi * T * D + di, FV + bi * T * D + di, PM + bi * T * D + di, PV + bi * T * D + di
    m0 = tl.load(M0 + bi * sM0[0] + di * sM0[1], mask=live, other=0.0).to(DT)
    v0 = tl.load(V0 + bi * sV0[0] + di * sV0[1], mask=live, other=1.0).to(DT)
    mean, var = m0, v0  # filtered belief of step t - 1 (unused at t = 0, a start)
    a_prev, c_prev, q_prev = tl.full([BLOCK], 0.0, DT), m0, v0  # transition out of step t - 1 (likewise)
    for t0 in range(0, T, U):
        ok_, a_, c_, q_, y_, r_, obs_, first_ = ((),) * 8
        for i in tl.static_range(U):
            ok = live & (tl.full([BLOCK], t0 + i, tl.int32) < T)
            ok_ += (ok,)
            a_ += (tl.load(pA, mask=ok, other=0.0).to(DT),)
            c_ += (tl.load(pB, mask=ok, other=0.0).to(DT),)
            q_ += (tl.load(pQ, mask=ok, other=1.0).to(DT),)
            y_ += (tl.load(pY, mask=ok, other=0.0).to(DT),)
            r_ += (tl.load(pR, mask=ok, other=1.0).to(DT),)
            obs_ += (tl.load(pMASK, mask=ok, other=0) != 0,)
            first_ += (tl.load(pFIRST, mask=ok, other=1) != 0,)
            pA, pB, pQ, pY, pR = pA + sA[1], pB + sB[1], pQ + sQ[1], pY + sY[1], pR + sR[1]
            pMASK, pFIRST = pMASK + sMASK[1], pFIRST + sFIRST[1]
        for i in tl.static_range(U):
            ok, first, obs = ok_[i], first_[i], obs_[i]
            a = tl.where(first, 0.0, a_prev)
            pred_mean = a * mean + tl.where(first, m0, c_prev)
            pred_var = a * a * var + tl.where(first, v0, q_prev)
            y, r = tl.where(obs, y_[i], 0.0), tl.where(obs, r_[i], 1.0)  # a missing y, R may be NaN, inf
            inv_s = 1.0 / (pred_var + r)
            mean = pred_mean + tl.where(obs, pred_var * inv_s, 0.0) * (y - pred_mean)
            var = tl.where(obs, pred_var * r * inv_s, pred_var)
            tl.store(pPM, pred_mean, mask=ok)
            tl.store(pPV, pred_var, mask=ok)
            tl.store(pFM, mean, mask=ok)
            tl.store(pFV, var, mask=ok)
            pFM, pFV, pPM, pPV = pFM + D, pFV + D, pPM + D, pPV + D
            a_prev, c_prev, q_prev = a_[i], c_[i], q_[i]


@triton.jit
def _filter_bwd(A, sA, Y, sY, R, sR, MASK, sMASK, FIRST, sFIRST, FM, FV, PM, PV,
                GFM, sGFM, GFV, sGFV, GPM, sGPM, GPV, sGPV, dA, dB, dQ, dY, dR, dM0, dV0, N, T, D,
                DT: tl.constexpr, BLOCK: tl.constexpr, U: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = idx < N
    bi, di = (idx // D).to(tl.int64), (idx % D).to(tl.int64)
    last = T - 1  # pointers start at step T - 1 (inputs of step t - 1: at T - 2) and move backwards
    pA = A + bi * sA[0] + di * sA[2] + (last - 1) * sA[1]
    pY, pR = Y + bi * sY[0] + di * sY[2] + last * sY[1], R + bi * sR[0] + di * sR[2] + last * sR[1]
    pMASK, pFIRST = MASK + bi * sMASK[0] + last * sMASK[1], FIRST + bi * sFIRST[0] + last * sFIRST[1]
    pGFM, pGFV = GFM + bi * sGFM[0] + di * sGFM[2] + last * sGFM[1], GFV + bi * sGFV[0] + di * sGFV[2] + last * sGFV[1]
    pGPM, pGPV = GPM + bi * sGPM[0] + di * sGPM[2] + last * sGPM[1], GPV + bi * sGPV[0] + di * sGPV[2] + last * sGPV[1]
    out = bi * T * D + di + last * D  # saved outputs and the gradients are contiguous (B, T, D)
    pFM, pFV, pPM, pPV = FM + out - D, FV + out - D, PM + out, PV + out  # filtered at t - 1, predicted at t
    pdA, pdB, pdQ, pdY, pdR = dA + out, dB + out, dQ + out, dY + out, dR + out
    zero = tl.full([BLOCK], 0.0, DT)
    tl.store(pdA, zero, mask=live)  # the last step's transition is unused
    tl.store(pdB, zero, mask=live)
    tl.store(pdQ, zero, mask=live)
    pdA, pdB, pdQ = pdA - D, pdB - D, pdQ - D  # gradients of the transition into step t, stored at t - 1
    bar_mean, bar_var = zero, zero  # adjoint of the filtered belief of step t, carried from t + 1
    bar_m0, bar_v0 = zero, zero
    for c in range(0, (T + U - 1) // U):
        ok_, okp_, a_, fm_, fv_, pm_, pv_, y_, r_, obs_, first_, gfm_, gfv_, gpm_, gpv_ = ((),) * 15
        for i in tl.static_range(U):
            t = tl.full([BLOCK], last - c * U - i, tl.int32)
            ok, ok_prev = live & (t >= 0), live & (t >= 1)
            ok_, okp_ = ok_ + (ok,), okp_ + (ok_prev,)
            a_ += (tl.load(pA, mask=ok_prev, other=0.0).to(DT),)
            fm_ += (tl.load(pFM, mask=ok_prev, other=0.0),)
            fv_ += (tl.load(pFV, mask=ok_prev, other=0.0),)
            pm_ += (tl.load(pPM, mask=ok, other=0.0),)
            pv_ += (tl.load(pPV, mask=ok, other=1.0),)
            y_ += (tl.load(pY, mask=ok, other=0.0).to(DT),)
            r_ += (tl.load(pR, mask=ok, other=1.0).to(DT),)
            obs_ += (tl.load(pMASK, mask=ok, other=0) != 0,)
            first_ += (tl.load(pFIRST, mask=ok, other=1) != 0,)
            gfm_ += (tl.load(pGFM, mask=ok, other=0.0).to(DT),)
            gfv_ += (tl.load(pGFV, mask=ok, other=0.0).to(DT),)
            gpm_ += (tl.load(pGPM, mask=ok, other=0.0).to(DT),)
            gpv_ += (tl.load(pGPV, mask=ok, other=0.0).to(DT),)
            pA, pY, pR, pMASK, pFIRST = pA - sA[1], pY - sY[1], pR - sR[1], pMASK - sMASK[1], pFIRST - sFIRST[1]
            pGFM, pGFV, pGPM, pGPV = pGFM - sGFM[1], pGFV - sGFV[1], pGPM - sGPM[1], pGPV - sGPV[1]
            pFM, pFV, pPM, pPV = pFM - D, pFV - D, pPM - D, pPV - D
        for i in tl.static_range(U):
            ok, ok_prev, first, obs, pred_var = ok_[i], okp_[i], first_[i], obs_[i], pv_[i]
            bar_mean += gfm_[i]
            bar_var += gfv_[i]
            y, r = tl.where(obs, y_[i], 0.0), tl.where(obs, r_[i], 1.0)
            inv_s = 1.0 / (pred_var + r)
            gain, keep, resid = pred_var * inv_s, r * inv_s, y - pm_[i]  # K, 1 - K, y - m-
            bar_pm = gpm_[i] + tl.where(obs, keep * bar_mean, bar_mean)
            bar_pv = gpv_[i] + tl.where(obs, keep * (resid * inv_s * bar_mean + keep * bar_var), bar_var)
            tl.store(pdY, tl.where(obs, gain * bar_mean, 0.0), mask=ok)
            tl.store(pdR, tl.where(obs, gain * (gain * bar_var - resid * inv_s * bar_mean), 0.0), mask=ok)
            a = tl.where(first, 0.0, a_[i])
            bar_a = fm_[i] * bar_pm + 2.0 * a * fv_[i] * bar_pv
            tl.store(pdA, tl.where(first, 0.0, bar_a), mask=ok_prev)
            tl.store(pdB, tl.where(first, 0.0, bar_pm), mask=ok_prev)
            tl.store(pdQ, tl.where(first, 0.0, bar_pv), mask=ok_prev)
            bar_m0 += tl.where(first & ok, bar_pm, 0.0)
            bar_v0 += tl.where(first & ok, bar_pv, 0.0)
            bar_mean, bar_var = a * bar_pm, a * a * bar_pv
            pdA, pdB, pdQ, pdY, pdR = pdA - D, pdB - D, pdQ - D, pdY - D, pdR - D
    tl.store(dM0 + bi * D + di, bar_m0, mask=live)
    tl.store(dV0 + bi * D + di, bar_v0, mask=live)


@triton.jit
def _smoother_fwd(FM, sFM, FV, sFV, A, sA, Bt, sB, Q, sQ, FIRST, sFIRST, SM, SV, G, N, T, D,
                  DT: tl.constexpr, BLOCK: tl.constexpr, U: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = idx < N
    bi, di = (idx // D).to(tl.int64), (idx % D).to(tl.int64)
    last = T - 1  # pointers start at step T - 1 (is_first of step t + 1: at T) and move backwards
    pFM, pFV = FM + bi * sFM[0] + di * sFM[2] + last * sFM[1], FV + bi * sFV[0] + di * sFV[2] + last * sFV[1]
    pA, pB = A + bi * sA[0] + di * sA[2] + last * sA[1], Bt + bi * sB[0] + di * sB[2] + last * sB[1]
    pQ, pNEXT = Q + bi * sQ[0] + di * sQ[2] + last * sQ[1], FIRST + bi * sFIRST[0] + T * sFIRST[1]
    out = bi * T * D + di + last * D
    pSM, pSV, pG = SM + out, SV + out, G + out
    next_mean, next_var = tl.full([BLOCK], 0.0, DT), tl.full([BLOCK], 0.0, DT)  # smoothed, step t + 1
    for c in range(0, (T + U - 1) // U):
        ok_, fm_, fv_, a_, b_, q_, cut_ = ((),) * 7
        for i in tl.static_range(U):
            t = tl.full([BLOCK], last - c * U - i, tl.int32)
            ok = live & (t >= 0)
            ok_ += (ok,)
            fm_ += (tl.load(pFM, mask=ok, other=0.0).to(DT),)
            fv_ += (tl.load(pFV, mask=ok, other=1.0).to(DT),)
            a_ += (tl.load(pA, mask=ok, other=0.0).to(DT),)
            b_ += (tl.load(pB, mask=ok, other=0.0).to(DT),)
            q_ += (tl.load(pQ, mask=ok, other=1.0).to(DT),)
            cut_ += ((tl.load(pNEXT, mask=ok & (t < last), other=1) != 0) | (t == last),)
            pFM, pFV, pA, pB, pQ = pFM - sFM[1], pFV - sFV[1], pA - sA[1], pB - sB[1], pQ - sQ[1]
            pNEXT -= sFIRST[1]
        for i in tl.static_range(U):
            ok, fm, fv = ok_[i], fm_[i], fv_[i]
            a, q = tl.where(cut_[i], 0.0, a_[i]), tl.where(cut_[i], 1.0, q_[i])
            inv_p = 1.0 / (a * a * fv + q)
            gain = fv * a * inv_p
            next_mean = fm + gain * (next_mean - a * fm - b_[i])
            next_var = gain * gain * next_var + fv * q * inv_p
            tl.store(pSM, next_mean, mask=ok)
            tl.store(pSV, next_var, mask=ok)
            tl.store(pG, gain, mask=ok)
            pSM, pSV, pG = pSM - D, pSV - D, pG - D


@triton.jit
def _smoother_bwd(FM, sFM, FV, sFV, A, sA, Bt, sB, Q, sQ, FIRST, sFIRST, SM, SV,
                  GSM, sGSM, GSV, sGSV, GG, sGG, dFM, dFV, dA, dB, dQ, N, T, D,
                  DT: tl.constexpr, BLOCK: tl.constexpr, U: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = idx < N
    bi, di = (idx // D).to(tl.int64), (idx % D).to(tl.int64)
    pFM, pFV = FM + bi * sFM[0] + di * sFM[2], FV + bi * sFV[0] + di * sFV[2]
    pA, pB, pQ = A + bi * sA[0] + di * sA[2], Bt + bi * sB[0] + di * sB[2], Q + bi * sQ[0] + di * sQ[2]
    pGSM, pGSV = GSM + bi * sGSM[0] + di * sGSM[2], GSV + bi * sGSV[0] + di * sGSV[2]
    pGG, pNEXT = GG + bi * sGG[0] + di * sGG[2], FIRST + bi * sFIRST[0] + sFIRST[1]  # is_first of step t + 1
    out = bi * T * D + di
    pSM, pSV = SM + out + D, SV + out + D  # smoothed marginals of step t + 1
    pdFM, pdFV, pdA, pdB, pdQ = dFM + out, dFV + out, dA + out, dB + out, dQ + out
    bar_mean, bar_var = tl.full([BLOCK], 0.0, DT), tl.full([BLOCK], 0.0, DT)  # adjoint of m^s_t, P^s_t from t - 1
    for t0 in range(0, T, U):
        ok_, fm_, fv_, a_, b_, q_, cut_, nm_, nv_, gsm_, gsv_, gg_ = ((),) * 12
        for i in tl.static_range(U):
            t = tl.full([BLOCK], t0 + i, tl.int32)
            ok, ok_next = live & (t < T), live & (t < T - 1)
            ok_ += (ok,)
            fm_ += (tl.load(pFM, mask=ok, other=0.0).to(DT),)
            fv_ += (tl.load(pFV, mask=ok, other=1.0).to(DT),)
            a_ += (tl.load(pA, mask=ok, other=0.0).to(DT),)
            b_ += (tl.load(pB, mask=ok, other=0.0).to(DT),)
            q_ += (tl.load(pQ, mask=ok, other=1.0).to(DT),)
            cut_ += (tl.load(pNEXT, mask=ok_next, other=1) != 0,)
            nm_ += (tl.load(pSM, mask=ok_next, other=0.0),)
            nv_ += (tl.load(pSV, mask=ok_next, other=0.0),)
            gsm_ += (tl.load(pGSM, mask=ok, other=0.0).to(DT),)
            gsv_ += (tl.load(pGSV, mask=ok, other=0.0).to(DT),)
            gg_ += (tl.load(pGG, mask=ok, other=0.0).to(DT),)
            pFM, pFV, pA, pB, pQ = pFM + sFM[1], pFV + sFV[1], pA + sA[1], pB + sB[1], pQ + sQ[1]
            pGSM, pGSV, pGG, pNEXT = pGSM + sGSM[1], pGSV + sGSV[1], pGG + sGG[1], pNEXT + sFIRST[1]
            pSM, pSV = pSM + D, pSV + D
        for i in tl.static_range(U):
            ok, cut, fm, fv = ok_[i], cut_[i], fm_[i], fv_[i]
            a, q = tl.where(cut, 0.0, a_[i]), tl.where(cut, 1.0, q_[i])
            inv_p = 1.0 / (a * a * fv + q)
            gain, lvar = fv * a * inv_p, fv * q * inv_p
            bar_mean += gsm_[i]
            bar_var += gsv_[i]
            bar_gain = gg_[i] + (nm_[i] - a * fm - b_[i]) * bar_mean + 2.0 * gain * nv_[i] * bar_var
            bar_p = -(gain * bar_gain + lvar * bar_var) * inv_p
            tl.store(pdFM, (1.0 - a * gain) * bar_mean, mask=ok)
            tl.store(pdFV, (a * bar_gain + q * bar_var) * inv_p + a * a * bar_p, mask=ok)
            bar_a = fv * bar_gain * inv_p - gain * fm * bar_mean + 2.0 * a * fv * bar_p
            tl.store(pdA, tl.where(cut, 0.0, bar_a), mask=ok)
            tl.store(pdB, tl.where(cut, 0.0, -gain * bar_mean), mask=ok)
            tl.store(pdQ, tl.where(cut, 0.0, fv * bar_var * inv_p + bar_p), mask=ok)
            bar_mean, bar_var = gain * bar_mean, gain * gain * bar_var
            pdFM, pdFV, pdA, pdB, pdQ = pdFM + D, pdFV + D, pdA + D, pdB + D, pdQ + D


# Under TRITON_INTERPRET=1 (decided when the kernels were defined) every unrolled step costs Python
# calls; 2 steps per chunk still cross chunk boundaries and pad the last chunk, as 8 do.
if not isinstance(_filter_fwd, triton.runtime.JITFunction):
    UNROLL = 2


# ---------------------------------------------------------------------------------------------
# autograd: the Functions take the checked (possibly expanded, stride-0) views and return
# full-shape gradients; autograd sums them back onto the broadcast shapes of the caller's tensors.

def _launch(kernel, shape, dtype, *args):
    B, T, D = shape
    kernel[(triton.cdiv(B * D, BLOCK),)](*args, B * D, T, D, DT=tl.float64 if dtype == torch.float64 else tl.float32,
                                         BLOCK=BLOCK, U=UNROLL, num_warps=NUM_WARPS)


def _compute_dtype(*tensors):
    return torch.float64 if any(x.dtype == torch.float64 for x in tensors) else torch.float32


def _with_strides(*tensors):
    """(x0, x0.stride(), x1, x1.stride(), ...): the kernels index every input through its strides."""
    return [item for x in tensors for item in (x, x.stride())]


class _Filter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A, b, Q, y, R, mean0, var0, mask, first):
        dtype = _compute_dtype(A, b, Q, y, R, mean0, var0)
        outputs = [torch.empty(y.shape, dtype=dtype, device=y.device) for _ in range(4)]  # m+, P+, m-, P-
        _launch(_filter_fwd, y.shape, dtype, *_with_strides(A, b, Q, y, R, mean0, var0, mask, first), *outputs)
        ctx.save_for_backward(A, y, R, mask, first, *outputs)
        return tuple(outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        A, y, R, mask, first, *outputs = ctx.saved_tensors
        dtype, (B, _, D) = outputs[0].dtype, y.shape
        dA, db, dQ, dy, dR = (torch.empty(y.shape, dtype=dtype, device=y.device) for _ in range(5))
        dmean0, dvar0 = (torch.empty(B, D, dtype=dtype, device=y.device) for _ in range(2))
        _launch(_filter_bwd, y.shape, dtype, *_with_strides(A, y, R, mask, first), *outputs,
                *_with_strides(*grads), dA, db, dQ, dy, dR, dmean0, dvar0)
        return dA, db, dQ, dy, dR, dmean0, dvar0, None, None


class _Smoother(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mean, var, A, b, Q, is_first):
        dtype = _compute_dtype(mean, var, A, b, Q)
        outputs = [torch.empty(mean.shape, dtype=dtype, device=mean.device) for _ in range(3)]  # m^s, P^s, G
        _launch(_smoother_fwd, mean.shape, dtype, *_with_strides(mean, var, A, b, Q, is_first), *outputs)
        ctx.save_for_backward(mean, var, A, b, Q, is_first, *outputs[:2])
        return tuple(outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        mean, var, A, b, Q, is_first, smoothed_mean, smoothed_var = ctx.saved_tensors
        dtype = smoothed_mean.dtype
        dmean, dvar, dA, db, dQ = (torch.empty(mean.shape, dtype=dtype, device=mean.device) for _ in range(5))
        _launch(_smoother_bwd, mean.shape, dtype, *_with_strides(mean, var, A, b, Q, is_first), smoothed_mean,
                smoothed_var, *_with_strides(*grads), dmean, dvar, dA, db, dQ)
        return dmean, dvar, dA, db, dQ, None


# ---------------------------------------------------------------------------------------------
# Twins of models.kalman's sequential references (same signatures, inputs as checked there).

def kalman_filter_triton(A, b, Q, y, R, mean0, var0, mask, is_first) -> FilterResult:
    """Fused-kernel filter. A, b, Q, y, R: (B, T, D), mean0, var0: (B, D) (expanded views are fine),
    mask, is_first: (B, T) bool, on y's device (CUDA, or CPU under TRITON_INTERPRET=1)."""
    first = _with_first_step(is_first)
    A, b, Q, R, mean0, var0, mask = (x.to(y.device) for x in (A, b, Q, R, mean0, var0, mask))
    return FilterResult(*_Filter.apply(A, b, Q, y, R, mean0, var0, mask, first), first)


def kalman_smoother_triton(mean, var, A, b, Q, is_first) -> SmootherResult:
    """Fused-kernel RTS smoother. mean, var, A, b, Q: (B, T, D); is_first: (B, T) bool with step 0 set
    (`FilterResult.is_first`)."""
    A, b, Q, is_first = (x.to(mean.device) for x in (A, b, Q, is_first))
    return SmootherResult(*_Smoother.apply(mean, var, A, b, Q, is_first))
