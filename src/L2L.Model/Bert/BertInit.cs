// BERT's weight initialisation as Hugging Face does it, one layer at a time, reproducible from a seed.
namespace L2L.Model.Bert;

/// <summary>
/// Hugging Face BERT initialisation: Linear weights and embeddings N(0, 0.02) (<c>initializer_range</c>),
/// biases 0, LayerNorm gains 1 and shifts 0, the padding id's word-embedding row 0, and the decoder's
/// <c>cls.predictions.bias</c> 0. Values come in chunks drawn from generators seeded by
/// (seed, layer, position), as in <see cref="GptInit"/>, so a layer initialised alone gets the same values.
/// </summary>
public static class BertInit
{
    /// <summary>Standard deviation of weights and embeddings.</summary>
    public const double Std = 0.02;

    /// <summary>A freshly initialised model: one array per entry of <see cref="ModelLayout.Layers"/>.</summary>
    public static float[][] Create(ModelLayout layout, int seed)
    {
        ArgumentNullException.ThrowIfNull(layout);
        var config = layout.Config as BertConfig
            ?? throw new ArgumentException($"BERT initialisation needs a BERT layout, got model type '{layout.Config.ModelType}'.", nameof(layout));
        var result = layout.Layers.Select(l => new float[l.Length]).ToArray();
        var chunk = GptInit.ChunkLength;
        var work = layout.Layers.SelectMany(l => Enumerable.Range(0, (int)((l.Length + chunk - 1) / chunk)).Select(c => (Layer: l, Chunk: c))).ToArray();
        Parallel.ForEach(work, item =>
        {
            var start = (long)item.Chunk * chunk;
            var length = (int)Math.Min(chunk, item.Layer.Length - start);
            FillChunk(item.Layer, result[item.Layer.Index].AsSpan((int)start, length), start, seed);
        });
        if (layout.Embedding.Tensors.Count > 0)
        {
            var word = layout.Embedding["word_embeddings.weight"];
            result[layout.Embedding.Index].AsSpan((int)(word.Offset + (long)config.PadTokenId * config.HiddenSize), config.HiddenSize).Clear();
        }
        return result;
    }

    /// <summary>Initialises layer <paramref name="index"/>'s block <paramref name="data"/>: the values <see cref="Create"/> gives that layer.</summary>
    public static void InitializeLayer(ModelLayout layout, int index, Span<float> data, int seed)
    {
        ArgumentNullException.ThrowIfNull(layout);
        var config = layout.Config as BertConfig
            ?? throw new ArgumentException($"BERT initialisation needs a BERT layout, got model type '{layout.Config.ModelType}'.", nameof(layout));
        var layer = layout.Layers[index];
        if (data.Length != layer.Length)
            throw new ArgumentException($"Layer '{layer.Name}' has {layer.Length} floats, the buffer has {data.Length}.", nameof(data));
        var chunk = GptInit.ChunkLength;
        for (long start = 0; start < data.Length; start += chunk)
            FillChunk(layer, data.Slice((int)start, (int)Math.Min(chunk, data.Length - start)), start, seed);
        if (index == layout.Embedding.Index && layer.Tensors.Count > 0)
        {
            var word = layer["word_embeddings.weight"];
            data.Slice((int)(word.Offset + (long)config.PadTokenId * config.HiddenSize), config.HiddenSize).Clear();
        }
    }

    private static void FillChunk(LayerLayout layer, Span<float> chunk, long start, int seed)
    {
        var rng = new SplitMix64(SplitMix64.Mix(SplitMix64.Mix((ulong)(uint)seed, (ulong)layer.Index), (ulong)start));
        var end = start + chunk.Length;
        foreach (var slot in layer.Tensors)
        {
            var from = Math.Max(slot.Offset, start);
            var to = Math.Min(slot.Offset + slot.Length, end);
            if (from >= to) continue;
            var values = chunk.Slice((int)(from - start), (int)(to - from));
            var name = slot.LocalName;
            if (name.Contains("LayerNorm.", StringComparison.Ordinal))
                values.Fill(name.EndsWith(".weight", StringComparison.Ordinal) ? 1f : 0f);
            else if (name == "bias" || name.EndsWith(".bias", StringComparison.Ordinal))
                values.Clear();
            else
                rng.FillNormal(values, Std);
        }
    }
}
