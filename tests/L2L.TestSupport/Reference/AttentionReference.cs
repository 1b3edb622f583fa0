// Double-precision reference for multi-head scaled-dot-product attention over a fused qkv (B, T, 3C),
// with causal masking, per-sequence key lengths and a per-key padding mask.
namespace L2L.TestSupport.Reference;

/// <summary>
/// Plain loops in double. Layout: <c>qkv</c> (B, T, 3C) with q, k, v along the last dimension, head <c>h</c> on
/// channels <c>h*hs ..</c> of each; output (B, T, C); probabilities (B, NH, T, T). Query <c>tq</c> of sequence
/// <c>b</c> sees key <c>j</c> when <c>j &lt; clamp(keyLengths[b], 0, T)</c> (<c>keyLengths</c> (B) or null = T),
/// <c>j &lt;= tq</c> with <c>causal</c>, and <c>keyMask[b*T + j] != 0</c> (<c>keyMask</c> (B, T) or null = all).
/// A query that sees no key has zero probabilities and a zero output.
/// </summary>
public static class AttentionReference
{
    /// <summary>Whether query <paramref name="query"/> of sequence <paramref name="seq"/> sees key <paramref name="key"/>.</summary>
    public static bool Visible(int[]? keyLengths, int[]? keyMask, int seq, int query, int key, int t, bool causal)
    {
        if (keyLengths is { Length: > 0 } && key >= Math.Clamp(keyLengths[seq], 0, t)) return false;
        if (causal && key > query) return false;
        return keyMask is not { Length: > 0 } || keyMask[seq * t + key] != 0;
    }

    /// <summary>How many keys (a prefix) query <paramref name="query"/> of sequence <paramref name="seq"/> sees without a key mask.</summary>
    public static int VisibleKeys(int[]? keyLengths, int seq, int query, int t, bool causal)
    {
        var n = 0;
        while (n < t && Visible(keyLengths, null, seq, query, n, t, causal)) n++;
        return n;
    }

    /// <summary>The attention output (B, T, C) and the probabilities (B, NH, T, T), masked entries 0; no key mask.</summary>
    public static (double[] Output, double[] Probs) Forward(double[] qkv, int[]? keyLengths, int b, int t, int c, int nh, bool causal)
        => Forward(qkv, keyLengths, null, b, t, c, nh, causal);

    /// <summary>The attention output (B, T, C) and the probabilities (B, NH, T, T), masked entries 0.</summary>
    public static (double[] Output, double[] Probs) Forward(double[] qkv, int[]? keyLengths, int[]? keyMask, int b, int t, int c, int nh, bool causal)
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
            var row = ((bi * nh + h) * t + tq) * t;
            var max = double.NegativeInfinity;
            for (var j = 0; j < t; j++)
            {
                if (!Visible(keyLengths, keyMask, bi, tq, j, t, causal)) continue;
                var dot = 0.0;
                for (var i = 0; i < hs; i++)
                    dot += Q(qkv, bi, tq, h * hs + i, t, c) * K(qkv, bi, j, h * hs + i, t, c);
                scores[j] = dot * scale;
                max = Math.Max(max, scores[j]);
            }
            var sum = 0.0;
            for (var j = 0; j < t; j++)
            {
                if (!Visible(keyLengths, keyMask, bi, tq, j, t, causal)) continue;
                scores[j] = Math.Exp(scores[j] - max);
                sum += scores[j];
            }
            for (var j = 0; j < t; j++)
                if (Visible(keyLengths, keyMask, bi, tq, j, t, causal))
                    probs[row + j] = scores[j] / sum;
            for (var i = 0; i < hs; i++)
            {
                var y = 0.0;
                for (var j = 0; j < t; j++)
                    y += probs[row + j] * V(qkv, bi, j, h * hs + i, t, c);
                output[(bi * t + tq) * c + h * hs + i] = y;
            }
        }
        return (output, probs);
    }

    /// <summary>The gradient of <c>sum(output * dOutput)</c> with respect to <c>qkv</c>; no key mask.</summary>
    public static double[] Backward(double[] dOutput, double[] qkv, double[] probs, int[]? keyLengths, int b, int t, int c, int nh, bool causal)
        => Backward(dOutput, qkv, probs, keyLengths, null, b, t, c, nh, causal);

    /// <summary>
    /// The gradient (B, T, 3C) of <c>sum(output * dOutput)</c> with respect to <c>qkv</c>, given the probabilities
    /// from <see cref="Forward(double[], int[], int[], int, int, int, int, bool)"/>.
    /// </summary>
    public static double[] Backward(double[] dOutput, double[] qkv, double[] probs, int[]? keyLengths, int[]? keyMask, int b, int t, int c, int nh, bool causal)
    {
        var hs = c / nh;
        var scale = 1.0 / Math.Sqrt(hs);
        var dQkv = new double[b * t * 3 * c];
        var dProbs = new double[t];
        for (var bi = 0; bi < b; bi++)
        for (var h = 0; h < nh; h++)
        for (var tq = 0; tq < t; tq++)
        {
            var row = ((bi * nh + h) * t + tq) * t;
            var dot = 0.0;
            for (var j = 0; j < t; j++)
            {
                if (!Visible(keyLengths, keyMask, bi, tq, j, t, causal)) continue;
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
            for (var j = 0; j < t; j++)
            {
                if (!Visible(keyLengths, keyMask, bi, tq, j, t, causal)) continue;
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
