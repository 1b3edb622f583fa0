// GPT-2's weight initialisation, one layer at a time, reproducible from a seed.
namespace L2L.Model;

/// <summary>
/// GPT-2 initialisation: weights and embeddings N(0, 0.02), the two residual output projections
/// (<c>attn.c_proj.weight</c>, <c>mlp.c_proj.weight</c>) N(0, 0.02/√(2L)) so the residual stream's
/// variance does not grow with depth, biases 0, LayerNorm gains 1 and shifts 0.
/// </summary>
/// <remarks>
/// Each layer draws from its own generator seeded by (seed, layer index), so a layer can be
/// initialised on its own (for example by a parameter server that owns only some layers) and
/// gets the same values as when the whole model is created at once.
/// </remarks>
public static class GptInit
{
    /// <summary>Standard deviation of weights and embeddings.</summary>
    public const double Std = 0.02;

    /// <summary>A freshly initialised model: one array per entry of <see cref="ModelLayout.Layers"/>.</summary>
    public static float[][] Create(ModelLayout layout, int seed)
    {
        ArgumentNullException.ThrowIfNull(layout);
        var result = new float[layout.Layers.Count][];
        Parallel.For(0, result.Length, i =>
        {
            var layer = layout.Layers[i];
            result[i] = new float[layer.Length];
            InitializeLayer(layer, result[i], layout.Config, seed);
        });
        return result;
    }

    /// <summary>Initialises one layer's block <paramref name="data"/> (length <see cref="LayerLayout.Length"/>).</summary>
    public static void InitializeLayer(LayerLayout layer, Span<float> data, GptConfig config, int seed)
    {
        ArgumentNullException.ThrowIfNull(layer);
        ArgumentNullException.ThrowIfNull(config);
        if (data.Length != layer.Length)
            throw new ArgumentException($"Layer '{layer.Name}' has {layer.Length} floats, the buffer has {data.Length}.", nameof(data));

        var rng = new SplitMix64(SplitMix64.Mix((ulong)(uint)seed, (ulong)layer.Index));
        var residualStd = Std / Math.Sqrt(2.0 * config.Layers);
        foreach (var slot in layer.Tensors)
        {
            var values = LayerLayout.Slice(data, slot);
            var name = slot.LocalName;
            if (name.StartsWith("ln_", StringComparison.Ordinal))
                values.Fill(name.EndsWith(".weight", StringComparison.Ordinal) ? 1f : 0f);
            else if (name.EndsWith(".bias", StringComparison.Ordinal))
                values.Clear();
            else if (name is "attn.c_proj.weight" or "mlp.c_proj.weight")
                rng.FillNormal(values, residualStd);
            else
                rng.FillNormal(values, Std);
        }
    }
}

/// <summary>
/// A small, fast, seedable generator (SplitMix64) whose output is fixed by this code alone, not by
/// the runtime's <see cref="Random"/> implementation, so seeds reproduce across .NET versions.
/// </summary>
internal struct SplitMix64
{
    private ulong _state;

    public SplitMix64(ulong seed) => _state = seed;

    /// <summary>Combines two values into a well-mixed 64-bit seed.</summary>
    public static ulong Mix(ulong a, ulong b) => Scramble(Scramble(a + 0x9E3779B97F4A7C15UL) ^ (b * 0xD1B54A32D192ED03UL + 0x632BE59BD9B4E019UL));

    public static ulong Scramble(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64() => Scramble(_state += 0x9E3779B97F4A7C15UL);

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [0, n) (Lemire's multiply-shift; the bias is below 2^-32 for any int n).</summary>
    public int NextInt(int n) => (int)(((NextUInt64() >> 32) * (ulong)n) >> 32);

    /// <summary>Fills <paramref name="values"/> with N(0, std²) samples (Box-Muller, both outputs used).</summary>
    public void FillNormal(Span<float> values, double std)
    {
        var i = 0;
        for (; i + 1 < values.Length; i += 2)
        {
            var (a, b) = NextNormalPair();
            values[i] = (float)(a * std);
            values[i + 1] = (float)(b * std);
        }
        if (i < values.Length) values[i] = (float)(NextNormalPair().A * std);
    }

    private (double A, double B) NextNormalPair()
    {
        var u1 = 1.0 - NextDouble(); // (0, 1], keeps the log finite
        var u2 = NextDouble();
        var r = Math.Sqrt(-2.0 * Math.Log(u1));
        var (sin, cos) = Math.SinCos(2 * Math.PI * u2);
        return (r * cos, r * sin);
    }
}
