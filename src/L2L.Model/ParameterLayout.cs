// The parameter name table: where every tensor lives inside its layer's one contiguous float block.
using System.Diagnostics.CodeAnalysis;

namespace L2L.Model;

/// <summary>What a layer computes.</summary>
public enum LayerKind
{
    /// <summary>The embeddings (GPT-2: <c>wte</c>, <c>wpe</c>); the token embedding is also the tied LM head's weight.</summary>
    Embedding,

    /// <summary>A transformer block (GPT-2: <c>h.{i}</c>), one of L repeated layers.</summary>
    Block,

    /// <summary>What runs between the last block and the tied LM head and the loss (GPT-2: <c>ln_f</c>).</summary>
    Head,
}

/// <summary>One tensor inside a layer's contiguous block.</summary>
/// <param name="LocalName">Name within the layer, e.g. <c>attn.c_attn.weight</c>.</param>
/// <param name="FullName">Hugging Face name, e.g. <c>h.3.attn.c_attn.weight</c> (GPT-2) or <c>bert.encoder.layer.3.attention.self.query.weight</c>.</param>
/// <param name="Offset">First float of the tensor within the layer block.</param>
/// <param name="Shape">Row-major shape as Hugging Face stores it: GPT-2's Conv1D weights [in, out], BERT's Linear weights [out, in].</param>
/// <param name="Decay">Whether weight decay applies (the 2-D matrices and embeddings, not biases or LayerNorm gains).</param>
public sealed record TensorSlot(string LocalName, string FullName, long Offset, int[] Shape, bool Decay)
{
    /// <summary>Number of floats, the product of <see cref="Shape"/>.</summary>
    public long Length => Shape.Aggregate(1L, (n, d) => n * d);

    /// <summary>The shape as <c>long</c>s, as safetensors stores it.</summary>
    public long[] LongShape => Array.ConvertAll(Shape, d => (long)d);

    /// <summary>
    /// The optimizers multiply the learning rate by this for this tensor: 1 except in a unit-scaled GPT-2
    /// (see <see cref="Gpt2.UnitScales.LearningRateScale"/>).
    /// </summary>
    public float LearningRateScale { get; init; } = 1f;
}

/// <summary>
/// One layer's parameters: a single contiguous float block (so one copy moves the layer) holding
/// its tensors back to back at fixed offsets, in a fixed order.
/// </summary>
public sealed class LayerLayout
{
    private readonly Dictionary<string, TensorSlot> _byName;

    internal LayerLayout(int index, string name, LayerKind kind, IEnumerable<(string LocalName, int[] Shape, bool Decay)> tensors,
        Func<string, float>? learningRateScale = null)
        : this(index, name, kind, kind == LayerKind.Block ? name + "." : "", tensors, learningRateScale)
    {
    }

    /// <summary>A layer whose tensors' full names are <paramref name="prefix"/> + local name.</summary>
    internal LayerLayout(int index, string name, LayerKind kind, string prefix, IEnumerable<(string LocalName, int[] Shape, bool Decay)> tensors,
        Func<string, float>? learningRateScale = null)
    {
        Index = index;
        Name = name;
        Kind = kind;
        var slots = new List<TensorSlot>();
        long offset = 0;
        foreach (var (localName, shape, decay) in tensors)
        {
            var slot = new TensorSlot(localName, prefix + localName, offset, shape, decay) { LearningRateScale = learningRateScale?.Invoke(localName) ?? 1f };
            slots.Add(slot);
            offset += slot.Length;
        }
        Tensors = slots.AsReadOnly();
        Length = offset;
        _byName = slots.ToDictionary(s => s.LocalName, StringComparer.Ordinal);
    }

    /// <summary>Position in <see cref="ModelLayout.Layers"/>.</summary>
    public int Index { get; }

    /// <summary><c>embedding</c>, the blocks (GPT-2 <c>h.{i}</c>, BERT <c>layer.{i}</c>), or <c>head</c>.</summary>
    public string Name { get; }

    /// <summary>What the layer computes.</summary>
    public LayerKind Kind { get; }

    /// <summary>The tensors in storage order; offsets are contiguous and start at 0.</summary>
    public IReadOnlyList<TensorSlot> Tensors { get; }

    /// <summary>Total floats in the layer block.</summary>
    public long Length { get; }

    /// <summary>The tensor with local name <paramref name="localName"/>, e.g. <c>attn.c_attn.weight</c>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor; the message lists this layer's tensors.</exception>
    public TensorSlot this[string localName] =>
        _byName.TryGetValue(localName, out var slot)
            ? slot
            : throw new KeyNotFoundException($"Layer '{Name}' has no tensor '{localName}'. Its tensors: {string.Join(", ", Tensors.Select(t => t.LocalName))}.");

    /// <summary>The floats of <paramref name="slot"/> within this layer's block <paramref name="data"/>.</summary>
    public static Span<float> Slice(Span<float> data, TensorSlot slot) => data.Slice(checked((int)slot.Offset), checked((int)slot.Length));

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({Kind}, {Length} floats)";
}

/// <summary>
/// A model's parameter layout: layers <c>[embedding, block 0 … block L-1, head]</c>, each one
/// contiguous block. Tensor names and shapes are Hugging Face's for the model type (GPT-2's
/// <c>wte.weight</c>, <c>h.{i}.…</c>; BERT's <c>bert.embeddings.…</c>, <c>bert.encoder.layer.{i}.…</c>,
/// <c>cls.predictions.…</c>), so checkpoints map one to one. The table comes from the model's folder.
/// </summary>
public sealed class ModelLayout
{
    private readonly Dictionary<string, (LayerLayout Layer, TensorSlot Slot)> _byFullName;

    /// <summary>Builds the layout of <paramref name="config"/> (a <see cref="GptConfig"/> or <see cref="Bert.BertConfig"/>).</summary>
    /// <exception cref="InvalidDataException">The config is invalid.</exception>
    public ModelLayout(IModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        var layers = config switch
        {
            GptConfig gpt => Gpt2.Gpt2Layout.Layers(gpt),
            Bert.BertConfig bert => Bert.BertLayout.Layers(bert),
            _ => throw new NotSupportedException($"No parameter layout for model type '{config.ModelType}'."),
        };

        Layers = layers.AsReadOnly();
        Embedding = layers[0];
        Blocks = layers.GetRange(1, config.Layers).AsReadOnly();
        Head = layers[^1];
        TotalLength = layers.Sum(l => l.Length);
        _byFullName = layers.SelectMany(l => l.Tensors.Select(t => (Layer: l, Slot: t)))
            .ToDictionary(x => x.Slot.FullName, StringComparer.Ordinal);
    }

    /// <summary>The model dimensions.</summary>
    public IModelConfig Config { get; }

    /// <summary>All layers in execution order: embedding, the blocks, head.</summary>
    public IReadOnlyList<LayerLayout> Layers { get; }

    /// <summary>The embedding layer; it holds the token embedding (V, C) that the head's decoder is tied to.</summary>
    public LayerLayout Embedding { get; }

    /// <summary>The transformer blocks, all with the same length.</summary>
    public IReadOnlyList<LayerLayout> Blocks { get; }

    /// <summary>The head's own parameters; its decoder weight is the token embedding in <see cref="Embedding"/>.</summary>
    public LayerLayout Head { get; }

    /// <summary>Total floats over all layers; equals <see cref="IModelConfig.ParameterCount"/>.</summary>
    public long TotalLength { get; }

    /// <summary>Looks a tensor up by its Hugging Face name, e.g. <c>h.0.ln_1.weight</c> or <c>bert.embeddings.LayerNorm.weight</c>.</summary>
    public bool TryFind(string fullName, [MaybeNullWhen(false)] out LayerLayout layer, [MaybeNullWhen(false)] out TensorSlot slot)
    {
        if (_byFullName.TryGetValue(fullName, out var found))
        {
            (layer, slot) = found;
            return true;
        }
        layer = null;
        slot = null;
        return false;
    }
}
