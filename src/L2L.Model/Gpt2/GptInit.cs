// GPT-2's weight initialisation, one layer at a time, reproducible from a seed.
namespace L2L.Model;

/// <summary>
/// GPT-2 initialisation: weights and embeddings N(0, 0.02), the two residual output projections
/// (<c>attn.c_proj.weight</c>, <c>mlp.c_proj.weight</c>) N(0, 0.02/√(2L)) so the residual stream's
/// variance does not grow with depth, biases 0, LayerNorm gains 1 and shifts 0. A unit-scaled model
/// (<see cref="GptConfig.UnitScaling"/>) draws every weight and embedding from N(0, 1): its ops carry the scale. Its
/// <c>mlp.c_proj.bias</c> starts at minus what GELU's positive mean (E gelu(x) ≈ 0.282 for unit x) sends through the
/// down-projection, so the MLP branch has zero mean at initialisation: otherwise that mean is the same vector in every
/// row of the stream, and causal attention, which averages rows, grows its output block by block.
/// </summary>
/// <remarks>
/// Random values come in chunks of <see cref="ChunkLength"/> floats, each from its own generator
/// seeded by (seed, layer index, position in the layer). So a layer initialised on its own (for
/// example by a parameter server that owns only some layers) gets the same values as when the whole
/// model is created at once, and <see cref="Create"/> can fill chunks in parallel without changing them.
/// </remarks>
public static class GptInit
{
    /// <summary>Standard deviation of weights and embeddings.</summary>
    public const double Std = 0.02;

    /// <summary>Floats drawn from one generator stream.</summary>
    public const int ChunkLength = 1 << 16;

    /// <summary>A freshly initialised model: one array per entry of <see cref="ModelLayout.Layers"/>.</summary>
    public static float[][] Create(ModelLayout layout, int seed)
    {
        ArgumentNullException.ThrowIfNull(layout);
        var config = layout.Config as GptConfig
            ?? throw new ArgumentException($"GPT-2 initialisation needs a GPT-2 layout, got model type '{layout.Config.ModelType}'.", nameof(layout));
        var result = layout.Layers.Select(l => new float[l.Length]).ToArray();
        var work = layout.Layers.SelectMany(l => Enumerable.Range(0, (int)((l.Length + ChunkLength - 1) / ChunkLength)).Select(c => (Layer: l, Chunk: c))).ToArray();
        Parallel.ForEach(work, item =>
        {
            var start = item.Chunk * ChunkLength;
            var length = (int)Math.Min(ChunkLength, item.Layer.Length - start);
            FillChunk(item.Layer, result[item.Layer.Index].AsSpan(start, length), start, config, seed);
        });
        if (config.UnitScaling)
            foreach (var layer in layout.Blocks)
                CentreMlpOutput(layer, result[layer.Index], config);
        return result;
    }

    /// <summary>Initialises one layer's block <paramref name="data"/> (length <see cref="LayerLayout.Length"/>).</summary>
    public static void InitializeLayer(LayerLayout layer, Span<float> data, GptConfig config, int seed)
    {
        ArgumentNullException.ThrowIfNull(layer);
        ArgumentNullException.ThrowIfNull(config);
        if (data.Length != layer.Length)
            throw new ArgumentException($"Layer '{layer.Name}' has {layer.Length} floats, the buffer has {data.Length}.", nameof(data));
        for (var start = 0; start < data.Length; start += ChunkLength)
            FillChunk(layer, data.Slice(start, Math.Min(ChunkLength, data.Length - start)), start, config, seed);
        if (config.UnitScaling && layer.Kind == LayerKind.Block)
            CentreMlpOutput(layer, data, config);
    }

    /// <summary>A unit-scaled block's <c>mlp.c_proj.bias[c] = −(α·g·E[gelu]) Σ_j W[j, c]</c>, cancelling GELU's mean at initialisation.</summary>
    private static void CentreMlpOutput(LayerLayout layer, Span<float> data, GptConfig config)
    {
        var scales = Gpt2.UnitScales.For(config, 1, 1);
        var shift = (double)scales.MlpDown.Output * scales.Gelu * Gpt2.UnitScales.GeluMean;
        var w = LayerLayout.Slice(data, layer["mlp.c_proj.weight"]);
        var bias = LayerLayout.Slice(data, layer["mlp.c_proj.bias"]);
        int c = bias.Length, rows = w.Length / c;
        var sums = new double[c];
        for (var j = 0; j < rows; j++)
            for (var k = 0; k < c; k++)
                sums[k] += w[j * c + k];
        for (var k = 0; k < c; k++)
            bias[k] = (float)(-shift * sums[k]);
    }

    /// <summary>Fills <paramref name="chunk"/>, the layer's floats from <paramref name="start"/>, tensor by tensor.</summary>
    private static void FillChunk(LayerLayout layer, Span<float> chunk, long start, GptConfig config, int seed)
    {
        var rng = new SplitMix64(SplitMix64.Mix(SplitMix64.Mix((ulong)(uint)seed, (ulong)layer.Index), (ulong)start));
        var std = config.UnitScaling ? 1.0 : Std;
        var residualStd = config.UnitScaling ? 1.0 : Std / Math.Sqrt(2.0 * config.Layers);
        var end = start + chunk.Length;
        foreach (var slot in layer.Tensors)
        {
            var from = Math.Max(slot.Offset, start);
            var to = Math.Min(slot.Offset + slot.Length, end);
            if (from >= to) continue;
            var values = chunk.Slice((int)(from - start), (int)(to - from));
            var name = slot.LocalName;
            if (name.StartsWith("ln_", StringComparison.Ordinal))
                values.Fill(name.EndsWith(".weight", StringComparison.Ordinal) ? 1f : 0f);
            else if (name.EndsWith(".bias", StringComparison.Ordinal))
                values.Clear();
            else if (name is "attn.c_proj.weight" or "mlp.c_proj.weight")
                rng.FillNormal(values, residualStd);
            else
                rng.FillNormal(values, std);
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

    /// <summary>Fills <paramref name="values"/> with N(0, std²) samples (Marsaglia's polar method, both outputs used).</summary>
    public void FillNormal(Span<float> values, double std)
    {
        // The generator is inlined by hand: initialising a large model is dominated by this loop.
        var state = _state;
        var i = 0;
        while (i < values.Length)
        {
            double u, v, s;
            do
            {
                state += 0x9E3779B97F4A7C15UL;
                u = (Scramble(state) >> 11) * (2.0 / (1UL << 53)) - 1.0;
                state += 0x9E3779B97F4A7C15UL;
                v = (Scramble(state) >> 11) * (2.0 / (1UL << 53)) - 1.0;
                s = u * u + v * v;
            }
            while (s >= 1.0 || s == 0.0);
            var factor = std * Math.Sqrt(-2.0 * Math.Log(s) / s);
            values[i++] = (float)(u * factor);
            if (i < values.Length) values[i++] = (float)(v * factor);
        }
        _state = state;
    }
}
