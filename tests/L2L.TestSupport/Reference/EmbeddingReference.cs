// Double-precision reference for the token + position embedding forward and backward.
namespace L2L.TestSupport.Reference;

/// <summary>Token + position embedding over (B*T, C).</summary>
public static class EmbeddingReference
{
    /// <summary><c>output[b*T + t] = wte[tokens[b*T + t]] + wpe[t]</c>.</summary>
    public static double[] Forward(int[] tokens, double[] wte, double[] wpe, int b, int t, int c)
    {
        var output = new double[b * t * c];
        for (var r = 0; r < b * t; r++)
            for (var j = 0; j < c; j++)
                output[r * c + j] = wte[tokens[r] * c + j] + wpe[r % t * c + j];
        return output;
    }

    /// <summary>The gradients of wte (<paramref name="vocab"/>, C) and wpe (<paramref name="maxT"/>, C), not accumulated.</summary>
    public static (double[] dWte, double[] dWpe) Backward(double[] dOutput, int[] tokens, int b, int t, int c, int vocab, int maxT)
    {
        var dWte = new double[vocab * c];
        var dWpe = new double[maxT * c];
        for (var r = 0; r < b * t; r++)
            for (var j = 0; j < c; j++)
            {
                dWte[tokens[r] * c + j] += dOutput[r * c + j];
                dWpe[r % t * c + j] += dOutput[r * c + j];
            }
        return (dWte, dWpe);
    }
}
