// Deterministic random inputs for tests.
namespace L2L.TestSupport;

/// <summary>Seeded random arrays, so a failing test fails the same way every time.</summary>
public static class TestData
{
    /// <summary><paramref name="n"/> normal samples with standard deviation <paramref name="scale"/>.</summary>
    public static float[] Normal(int seed, int n, double scale = 1.0, double mean = 0.0)
    {
        var rng = new Random(seed);
        var result = new float[n];
        for (var i = 0; i < n; i++)
        {
            // Box-Muller
            var u1 = 1.0 - rng.NextDouble();
            var u2 = rng.NextDouble();
            result[i] = (float)(mean + scale * Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return result;
    }

    /// <summary><paramref name="n"/> uniform samples in [<paramref name="lo"/>, <paramref name="hi"/>).</summary>
    public static float[] Uniform(int seed, int n, double lo = -1, double hi = 1)
    {
        var rng = new Random(seed);
        var result = new float[n];
        for (var i = 0; i < n; i++) result[i] = (float)(lo + (hi - lo) * rng.NextDouble());
        return result;
    }

    /// <summary>Widens to double.</summary>
    public static double[] ToDouble(ReadOnlySpan<float> values)
    {
        var r = new double[values.Length];
        for (var i = 0; i < r.Length; i++) r[i] = values[i];
        return r;
    }
}
