// Double-precision reference for the softmax cross-entropy loss and its logits gradient.
namespace L2L.TestSupport.Reference;

/// <summary>Softmax cross-entropy over rows of logits (N, V).</summary>
public static class CrossEntropyReference
{
    /// <summary>Per-row <c>-log softmax(logits)[target]</c>, 0 where the target is <paramref name="ignoreIndex"/>.</summary>
    public static double[] Losses(double[] logits, int[] targets, int n, int v, int ignoreIndex = -1)
    {
        var losses = new double[n];
        for (var r = 0; r < n; r++)
        {
            if (targets[r] == ignoreIndex) continue;
            var (max, sum) = MaxAndSumExp(logits, r, v);
            losses[r] = Math.Log(sum) + max - logits[r * v + targets[r]];
        }
        return losses;
    }

    /// <summary><c>(softmax - onehot(target)) * scale</c> per row, zero rows where the target is <paramref name="ignoreIndex"/>.</summary>
    public static double[] DLogits(double[] logits, int[] targets, int n, int v, double scale, int ignoreIndex = -1)
    {
        var d = new double[n * v];
        for (var r = 0; r < n; r++)
        {
            if (targets[r] == ignoreIndex) continue;
            var (max, sum) = MaxAndSumExp(logits, r, v);
            for (var j = 0; j < v; j++)
                d[r * v + j] = (Math.Exp(logits[r * v + j] - max) / sum - (j == targets[r] ? 1.0 : 0.0)) * scale;
        }
        return d;
    }

    private static (double Max, double Sum) MaxAndSumExp(double[] logits, int r, int v)
    {
        var max = double.NegativeInfinity;
        for (var j = 0; j < v; j++) max = Math.Max(max, logits[r * v + j]);
        var sum = 0.0;
        for (var j = 0; j < v; j++) sum += Math.Exp(logits[r * v + j] - max);
        return (max, sum);
    }
}
