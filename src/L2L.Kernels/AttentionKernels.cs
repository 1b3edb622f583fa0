// Multi-head scaled-dot-product attention over a fused qkv tensor (GPT-2 / llm.c layout), forward and backward,
// with causal masking, per-sequence key lengths, a per-key padding mask, or any combination.
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// Dimensions and masking of one attention call. Letters: <c>B</c> sequences, <c>T</c> positions,
/// <c>C</c> channels, <c>NH</c> heads of <c>HeadSize = C / NH</c> channels.
/// </summary>
public readonly struct AttentionDims
{
    /// <summary>Creates the dims; <paramref name="c"/> must be a multiple of <paramref name="nh"/> (checked by the launcher).</summary>
    public AttentionDims(int b, int t, int c, int nh, bool causal)
    {
        B = b;
        T = t;
        C = c;
        NH = nh;
        HeadSize = c / nh;
        Causal = causal ? 1 : 0;
        Scale = 1.0f / MathF.Sqrt(HeadSize);
    }

    /// <summary>Batch size.</summary>
    public readonly int B;

    /// <summary>Sequence length (queries and keys).</summary>
    public readonly int T;

    /// <summary>Model channels.</summary>
    public readonly int C;

    /// <summary>Number of heads.</summary>
    public readonly int NH;

    /// <summary>Channels per head.</summary>
    public readonly int HeadSize;

    /// <summary>1 when query <c>t</c> may only attend keys <c>0..t</c>, else 0.</summary>
    public readonly int Causal;

    /// <summary>The score scale <c>1 / sqrt(HeadSize)</c>.</summary>
    public readonly float Scale;
}

/// <summary>
/// Attention kernels. Shapes: <c>qkv</c> (B, T, 3C) holding q, k, v in that order along the last
/// dimension, head <c>h</c> using channels <c>h*hs .. h*hs+hs-1</c> of each; output (B, T, C);
/// probabilities (B, NH, T, T) indexed [b, h, query, key].
/// <para>
/// Masking: query <c>t</c> of sequence <c>b</c> attends key <c>j</c> when all three hold:
/// <c>j &lt; keyLengths[b]</c> (clamped to [0, T]; <c>keyLengths</c> (B) or empty = T),
/// <c>j &lt;= t</c> if causal, and <c>keyMask[b*T + j] != 0</c> (<c>keyMask</c> (B, T) or empty = every key).
/// The first two make a prefix of the keys, which the loops run over; the mask then skips keys inside it.
/// A query with no key to attend gets an all-zero probability row and output.
/// </para>
/// <para>
/// Only <see cref="AttentionSoftmaxKernel"/> and <see cref="AttentionQkvBackwardKernel"/> read the mask:
/// masked probabilities are written as exactly 0, so the value sum and the softmax backward, which multiply
/// by them, give exactly 0 for masked keys without it.
/// </para>
/// </summary>
/// <remarks>
/// Every kernel is explicitly grouped with a grid-stride loop over rows or output elements, and every
/// output element is written by exactly one thread from a sum in a fixed order: no atomics, no shared
/// memory, results independent of the launch. A thread owns a whole row (or one output's whole sum),
/// which keeps the CPU accelerator free of barriers and gives it a loop of work per thread.
/// </remarks>
public static class AttentionKernels
{
    /// <summary>
    /// Scores and softmax: for each row (b, h, t) writes <c>probs[b,h,t,:]</c> = softmax over the visible keys of
    /// <c>q[b,t,h] . k[b,j,h] * scale</c>, max-subtracted, and 0 for masked keys.
    /// Shapes: <c>probs</c> (B, NH, T, T), <c>qkv</c> (B, T, 3C), <c>keyLengths</c> (B) or empty, <c>keyMask</c> (B, T) or empty.
    /// </summary>
    public static void AttentionSoftmaxKernel(ArrayView<float> probs, ArrayView<float> qkv, ArrayView<int> keyLengths,
        ArrayView<int> keyMask, AttentionDims d)
    {
        long rows = (long)d.B * d.NH * d.T;
        long stride = Grid.DimX * Group.DimX;
        long c3 = 3L * d.C;
        for (long r = Grid.GlobalIndex.X; r < rows; r += stride)
        {
            int t = (int)(r % d.T);
            long bh = r / d.T;
            int h = (int)(bh % d.NH);
            int b = (int)(bh / d.NH);
            int n = KeyCount(keyLengths, d, b, t);
            long q = ((long)b * d.T + t) * c3 + (long)h * d.HeadSize;
            long k0 = (long)b * d.T * c3 + d.C + (long)h * d.HeadSize;
            long p = r * d.T;
            long m = (long)b * d.T;

            // Online max and sum, so the row is visited twice: once for scores, once to normalise them.
            // sum stays 0 until the first visible key and is at least 1 after it.
            float max = float.NegativeInfinity;
            float sum = 0f;
            for (int j = 0; j < n; j++)
            {
                if (KeyMasked(keyMask, m + j))
                    continue;
                long k = k0 + j * c3;
                float dot = 0f;
                for (int c = 0; c < d.HeadSize; c++)
                    dot += qkv[q + c] * qkv[k + c];
                float s = dot * d.Scale;
                probs[p + j] = s;
                if (sum == 0f)
                {
                    max = s;
                    sum = 1f;
                }
                else if (s > max)
                {
                    sum = sum * XMath.Exp(max - s) + 1f;
                    max = s;
                }
                else
                {
                    sum += XMath.Exp(s - max);
                }
            }
            float inv = sum > 0f ? 1f / sum : 0f;
            for (int j = 0; j < n; j++)
                probs[p + j] = KeyMasked(keyMask, m + j) ? 0f : XMath.Exp(probs[p + j] - max) * inv;
            for (int j = n; j < d.T; j++)
                probs[p + j] = 0f;
        }
    }

    /// <summary>
    /// <c>output[b,t,h*hs+i] = sum_j probs[b,h,t,j] * v[b,j,h*hs+i]</c> over the visible keys.
    /// Shapes: <c>output</c> (B, T, C), <c>probs</c> (B, NH, T, T), <c>qkv</c> (B, T, 3C), <c>keyLengths</c> (B) or empty.
    /// </summary>
    public static void AttentionValuesKernel(ArrayView<float> output, ArrayView<float> probs, ArrayView<float> qkv, ArrayView<int> keyLengths, AttentionDims d)
    {
        long total = (long)d.B * d.T * d.C;
        long stride = Grid.DimX * Group.DimX;
        long c3 = 3L * d.C;
        for (long i = Grid.GlobalIndex.X; i < total; i += stride)
        {
            int ch = (int)(i % d.C);
            long bt = i / d.C;
            int t = (int)(bt % d.T);
            int b = (int)(bt / d.T);
            int h = ch / d.HeadSize;
            int n = KeyCount(keyLengths, d, b, t);
            long p = (((long)b * d.NH + h) * d.T + t) * d.T;
            long v = (long)b * d.T * c3 + 2L * d.C + ch;
            float sum = 0f;
            for (int j = 0; j < n; j++)
                sum += probs[p + j] * qkv[v + j * c3];
            output[i] = sum;
        }
    }

    /// <summary>
    /// Softmax backward per row (b, h, t): <c>dP[j] = dOutput[b,t,h] . v[b,j,h]</c>, then
    /// <c>dScores[j] = P[j] * (dP[j] - sum_j' P[j'] * dP[j'])</c> (before the <c>1/sqrt(hs)</c> scale), 0 for masked keys.
    /// Shapes: <c>dScores</c> (B, NH, T, T), <c>dOutput</c> (B, T, C), <c>qkv</c> (B, T, 3C), <c>probs</c> (B, NH, T, T),
    /// <c>keyLengths</c> (B) or empty.
    /// </summary>
    public static void AttentionScoresBackwardKernel(ArrayView<float> dScores, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> probs, ArrayView<int> keyLengths, AttentionDims d)
    {
        long rows = (long)d.B * d.NH * d.T;
        long stride = Grid.DimX * Group.DimX;
        long c3 = 3L * d.C;
        for (long r = Grid.GlobalIndex.X; r < rows; r += stride)
        {
            int t = (int)(r % d.T);
            long bh = r / d.T;
            int h = (int)(bh % d.NH);
            int b = (int)(bh / d.NH);
            int n = KeyCount(keyLengths, d, b, t);
            long dy = ((long)b * d.T + t) * d.C + (long)h * d.HeadSize;
            long v0 = (long)b * d.T * c3 + 2L * d.C + (long)h * d.HeadSize;
            long p = r * d.T;

            float dot = 0f;
            for (int j = 0; j < n; j++)
            {
                long v = v0 + j * c3;
                float dp = 0f;
                for (int c = 0; c < d.HeadSize; c++)
                    dp += dOutput[dy + c] * qkv[v + c];
                dScores[p + j] = dp;
                dot += probs[p + j] * dp;
            }
            for (int j = 0; j < n; j++)
                dScores[p + j] = probs[p + j] * (dScores[p + j] - dot);
            for (int j = n; j < d.T; j++)
                dScores[p + j] = 0f;
        }
    }

    /// <summary>
    /// Assigns the gradient of the whole fused input: for each element of <c>dQkv</c>,
    /// <c>dq[b,t] = scale * sum_j dScores[b,h,t,j] k[b,j]</c>, <c>dk[b,j] = scale * sum_t dScores[b,h,t,j] q[b,t]</c>,
    /// <c>dv[b,j] = sum_t probs[b,h,t,j] dOutput[b,t]</c>, each summed over the queries/keys the mask lets through.
    /// Shapes: <c>dQkv</c> (B, T, 3C), <c>dOutput</c> (B, T, C), <c>qkv</c> (B, T, 3C), <c>probs</c> and <c>dScores</c>
    /// (B, NH, T, T), <c>keyLengths</c> (B) or empty, <c>keyMask</c> (B, T) or empty.
    /// </summary>
    public static void AttentionQkvBackwardKernel(ArrayView<float> dQkv, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> probs, ArrayView<float> dScores, ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d)
    {
        long c3 = 3L * d.C;
        long total = (long)d.B * d.T * c3;
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < total; i += stride)
        {
            int col = (int)(i % c3);
            long bt = i / c3;
            int t = (int)(bt % d.T);
            int b = (int)(bt / d.T);
            int part = col / d.C;
            int ch = col - part * d.C;
            int h = ch / d.HeadSize;
            long rows = ((long)b * d.NH + h) * d.T; // first probability row of (b, h)
            long seq = (long)b * d.T * c3;
            float sum = 0f;
            if (part == 0)
            {
                // Query t: its row of dScores against the keys it sees.
                int n = KeyCount(keyLengths, d, b, t);
                long p = (rows + t) * d.T;
                long k = seq + d.C + ch;
                for (int j = 0; j < n; j++)
                    sum += dScores[p + j] * qkv[k + j * c3];
                sum *= d.Scale;
            }
            else
            {
                // Key t: the column t of dScores / probs over the queries that see it; a masked key gets exactly 0.
                int kl = KeyLimit(keyLengths, d, b);
                if (t < kl && !KeyMasked(keyMask, (long)b * d.T + t))
                {
                    int first = d.Causal != 0 ? t : 0;
                    if (part == 1)
                    {
                        long q = seq + ch;
                        for (int tq = first; tq < d.T; tq++)
                            sum += dScores[(rows + tq) * d.T + t] * qkv[q + tq * c3];
                        sum *= d.Scale;
                    }
                    else
                    {
                        long dy = (long)b * d.T * d.C + ch;
                        for (int tq = first; tq < d.T; tq++)
                            sum += probs[(rows + tq) * d.T + t] * dOutput[dy + (long)tq * d.C];
                    }
                }
            }
            dQkv[i] = sum;
        }
    }

    /// <summary>The number of keys sequence <paramref name="b"/> lets any query see: its key length clamped to [0, T], or T.</summary>
    private static int KeyLimit(ArrayView<int> keyLengths, AttentionDims d, int b)
    {
        if (keyLengths.Length == 0)
            return d.T;
        int kl = keyLengths[b];
        return kl < 0 ? 0 : kl > d.T ? d.T : kl;
    }

    /// <summary>Whether the padding mask hides key <c>keyMask[index]</c> (index = b*T + j); an empty mask hides none.</summary>
    private static bool KeyMasked(ArrayView<int> keyMask, long index) => keyMask.Length != 0 && keyMask[index] == 0;

    /// <summary>The number of keys (a prefix) query <paramref name="t"/> of sequence <paramref name="b"/> attends.</summary>
    private static int KeyCount(ArrayView<int> keyLengths, AttentionDims d, int b, int t)
    {
        int kl = KeyLimit(keyLengths, d, b);
        return d.Causal != 0 && t + 1 < kl ? t + 1 : kl;
    }
}
