// Double-precision reference for GELU (tanh approximation) forward and backward.
namespace L2L.TestSupport.Reference;

/// <summary>GELU in GPT-2's tanh approximation.</summary>
public static class GeluReference
{
    private static readonly double S = Math.Sqrt(2.0 / Math.PI);

    /// <summary><c>0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))</c> element-wise.</summary>
    public static double[] Forward(double[] input) =>
        input.Select(x => 0.5 * x * (1.0 + Math.Tanh(S * (x + 0.044715 * x * x * x)))).ToArray();

    /// <summary><c>dOutput * gelu'(input)</c> element-wise.</summary>
    public static double[] Backward(double[] dOutput, double[] input)
    {
        var result = new double[input.Length];
        for (var i = 0; i < input.Length; i++)
        {
            var x = input[i];
            var t = Math.Tanh(S * (x + 0.044715 * x * x * x));
            var sech2 = 1.0 - t * t;
            var local = 0.5 * (1.0 + t) + (sech2 == 0 ? 0.0 : 0.5 * x * sech2 * S * (1.0 + 3.0 * 0.044715 * x * x));
            result[i] = dOutput[i] * local;
        }
        return result;
    }
}
