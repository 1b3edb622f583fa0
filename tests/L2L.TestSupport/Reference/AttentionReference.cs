// Double-precision reference for multi-head scaled-dot-product attention over a fused qkv (B, T, 3C),
// with causal masking and/or per-sequence key lengths.
namespace L2L.TestSupport.Reference;

/// <summary>
/// Plain loops in double. Layout: <c>qkv</c> (B, T, 3C) with q, k, v along the last dimension, head <c>h</c> on
/// channels <c>h*hs ..</c> of each; output (B, T, C); probabilities (B, NH, T, T). <c>keyLengths</c> (B) or null:
/// sequence <c>b</c>'s queries see keys <c>0 .. clamp(keyLengths[b], 0, T)-1</c>, and with <c>causal</c> also only
/// keys up to themselves. A query that sees no key has zero probabilities and a zero output.
/// </summary>
public static class AttentionReference
{
    /// <summary>How many keys (a prefix) query <paramref name="query"/> of sequence <paramref name="seq"/> sees.</summary>
    public static int VisibleKeys(int[]? keyLengths, int seq, int query, int t, bool causal)
    {
        var n = keyLengths is null || keyLengths.Length == 0 ? t : Math.Clamp(keyLengths[seq], 0, t);
        return causal ? Math.Min(n, query + 1) : n;
    }

    /// <summary>The attention output (B, T, C) and the probabilities (B, NH, T, T), masked entries 0.</summary>
    public static (double[] Output, double[] Probs) Forward(double[] qkv, int[]? keyLengths, int b, int t, int c, int nh, bool causal)
    {
        var hs = c / nh;
        var scale = 1.0 / Math.Sqrt(hs);
        var output = new double[b * t * c];
        var probs = new double[b * nh * t * t];
        var scores = new double[t];
        for (var bi = 0; bi < b; bi++)
        for (var h = 0; h < nh; h++)
        for (var tq = 0; tq < t; tq++)
        {
            var n = VisibleKeys(keyLengths, bi, tq, t, causal);
            var row = ((bi * nh + h) * t + tq) * t;
            var max = double.NegativeInfinity;
            for (var j = 0; j < n; j++)
            {
                var dot = 0.0;
                for (var i = 0; i < hs; i++)
                    dot += Q(qkv, bi, tq, h * hs + i, t, c) * K(qkv, bi, j, h * hs + i, t, c);
                scores[j] = dot * scale;
                max = Math.Max(max, scores[j]);
            }
            var sum = 0.0;
            for (var j = 0; j < n; j++)
            {
                scores[j] = Math.Exp(scores[j] - max);
                sum += scores[j];
            }
            for (var j = 0; j < n; j++)
                probs[row + j] = scores[j] / sum;
            for (var i = 0; i < hs; i++)
            {
                var y = 0.0;
                for (var j = 0; j < n; j++)
                    y += probs[row + j] * V(qkv, bi, j, h * hs + i, t, c);
                output[(bi * t + tq) * c + h * hs + i] = y;
            }
        }
        return (output, probs);
    }

    /// <summary>
    /// The gradient (B, T, 3C) of <c>sum(output * dOutput)</c> with respect to <c>qkv</c>, given the probabilities
    /// from <see cref="Forward"/>.
    /// </summary>
    public static double[] Backward(double[] dOutput, double[] qkv, double[] probs, int[]? keyLengths, int b, int t, int c, int nh, bool causal)
    {
        var hs = c / nh;
        var scale = 1.0 / Math.Sqrt(hs);
        var dQkv = new double[b * t * 3 * c];
        var dProbs = new double[t];
        for (var bi = 0; bi < b; bi++)
        for (var h = 0; h < nh; h++)
        for (var tq = 0; tq < t; tq++)
        {
            var n = VisibleKeys(keyLengths, bi, tq, t, causal);
            var row = ((bi * nh + h) * t + tq) * t;
            var dot = 0.0;
            for (var j = 0; j < n; j++)
            {
                var dp = 0.0;
                for (var i = 0; i < hs; i++)
                {
                    var ch = h * hs + i;
                    var dy = dOutput[(bi * t + tq) * c + ch];
                    dp += dy * V(qkv, bi, j, ch, t, c);
                    dQkv[Index(bi, j, 2 * c + ch, t, c)] += probs[row + j] * dy;
                }
                dProbs[j] = dp;
                dot += probs[row + j] * dp;
            }
            for (var j = 0; j < n; j++)
            {
                var dScore = probs[row + j] * (dProbs[j] - dot) * scale;
                for (var i = 0; i < hs; i++)
                {
                    var ch = h * hs + i;
                    dQkv[Index(bi, tq, ch, t, c)] += dScore * K(qkv, bi, j, ch, t, c);
                    dQkv[Index(bi, j, c + ch, t, c)] += dScore * Q(qkv, bi, tq, ch, t, c);
                }
            }
        }
        return dQkv;
    }

    private static int Index(int bi, int ti, int col, int t, int c) => (bi * t + ti) * 3 * c + col;
    private static double Q(double[] qkv, int bi, int ti, int ch, int t, int c) => qkv[Index(bi, ti, ch, t, c)];
    private static double K(double[] qkv, int bi, int ti, int ch, int t, int c) => qkv[Index(bi, ti, c + ch, t, c)];
    private static double V(double[] qkv, int bi, int ti, int ch, int t, int c) => qkv[Index(bi, ti, 2 * c + ch, t, c)];
}
