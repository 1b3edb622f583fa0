// Double-precision reference for attention with every mask the kernels take (causal, key lengths, per-key mask),
// written as a visibility predicate so it shares no structure with the kernels' prefix-and-skip loops.
namespace L2L.Kernels.Tests;

/// <summary>
/// Plain loops in double over <c>qkv</c> (B, T, 3C). Key <c>j</c> is visible to query <c>t</c> of sequence <c>b</c>
/// when <c>j &lt; clamp(keyLengths[b], 0, T)</c>, <c>keyMask[b*T+j] != 0</c> and (causal) <c>j &lt;= t</c>; null
/// arrays mean no restriction. Rows with no visible key: output 0, log-sum-exp negative infinity.
/// </summary>
internal static class MaskedAttentionReference
{
    public static bool Visible(int[]? keyLengths, int[]? keyMask, bool causal, int t, int b, int query, int key)
    {
        var limit = keyLengths is null ? t : Math.Clamp(keyLengths[b], 0, t);
        return key < limit && (keyMask is null || keyMask[b * t + key] != 0) && (!causal || key <= query);
    }

    /// <summary>Output (B, T, C), log-sum-exp (B, NH, T) and probabilities (B, NH, T, T).</summary>
    public static (double[] Output, double[] Lse, double[] Probs) Forward(double[] qkv, int[]? keyLengths, int[]? keyMask,
        int b, int t, int c, int nh, bool causal)
    {
        var hs = c / nh;
        var scale = 1.0 / Math.Sqrt(hs);
        var output = new double[b * t * c];
        var lse = new double[b * nh * t];
        var probs = new double[b * nh * t * t];
        for (var bi = 0; bi < b; bi++)
        for (var h = 0; h < nh; h++)
        for (var tq = 0; tq < t; tq++)
        {
            var row = (bi * nh + h) * t + tq;
            var scores = new double[t];
            var max = double.NegativeInfinity;
            for (var j = 0; j < t; j++)
            {
                if (!Visible(keyLengths, keyMask, causal, t, bi, tq, j))
                    continue;
                var dot = 0.0;
                for (var i = 0; i < hs; i++)
                    dot += qkv[(bi * t + tq) * 3 * c + h * hs + i] * qkv[(bi * t + j) * 3 * c + c + h * hs + i];
                scores[j] = dot * scale;
                max = Math.Max(max, scores[j]);
            }
            var sum = 0.0;
            for (var j = 0; j < t; j++)
                if (Visible(keyLengths, keyMask, causal, t, bi, tq, j))
                    sum += Math.Exp(scores[j] - max);
            lse[row] = sum > 0 ? max + Math.Log(sum) : double.NegativeInfinity;
            for (var j = 0; j < t; j++)
                if (Visible(keyLengths, keyMask, causal, t, bi, tq, j))
                    probs[row * t + j] = Math.Exp(scores[j] - max) / sum;
            for (var i = 0; i < hs; i++)
            {
                var y = 0.0;
                for (var j = 0; j < t; j++)
                    y += probs[row * t + j] * qkv[(bi * t + j) * 3 * c + 2 * c + h * hs + i];
                output[(bi * t + tq) * c + h * hs + i] = y;
            }
        }
        return (output, lse, probs);
    }

    /// <summary>The gradient (B, T, 3C) of <c>sum(output * dOutput)</c> with respect to <c>qkv</c>.</summary>
    public static double[] Backward(double[] dOutput, double[] qkv, int[]? keyLengths, int[]? keyMask, int b, int t, int c, int nh, bool causal)
    {
        var (_, _, probs) = Forward(qkv, keyLengths, keyMask, b, t, c, nh, causal);
        var hs = c / nh;
        var scale = 1.0 / Math.Sqrt(hs);
        var dQkv = new double[b * t * 3 * c];
        for (var bi = 0; bi < b; bi++)
        for (var h = 0; h < nh; h++)
        for (var tq = 0; tq < t; tq++)
        {
            var row = ((bi * nh + h) * t + tq) * t;
            var dProbs = new double[t];
            var dot = 0.0;
            for (var j = 0; j < t; j++)
            {
                for (var i = 0; i < hs; i++)
                {
                    var ch = h * hs + i;
                    var dy = dOutput[(bi * t + tq) * c + ch];
                    dProbs[j] += dy * qkv[(bi * t + j) * 3 * c + 2 * c + ch];
                    dQkv[(bi * t + j) * 3 * c + 2 * c + ch] += probs[row + j] * dy;
                }
                dot += probs[row + j] * dProbs[j];
            }
            for (var j = 0; j < t; j++)
            {
                var dScore = probs[row + j] * (dProbs[j] - dot) * scale;
                for (var i = 0; i < hs; i++)
                {
                    var ch = h * hs + i;
                    dQkv[(bi * t + tq) * 3 * c + ch] += dScore * qkv[(bi * t + j) * 3 * c + c + ch];
                    dQkv[(bi * t + j) * 3 * c + c + ch] += dScore * qkv[(bi * t + tq) * 3 * c + ch];
                }
            }
        }
        return dQkv;
    }
}
