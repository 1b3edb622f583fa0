// The shape of one micro-batch as the device layers see it.
namespace L2L.Model.Device;

/// <summary>
/// One micro-batch: <see cref="Batch"/> sequences of <see cref="SeqLen"/> tokens through a model
/// described by <see cref="Config"/>. Letters used in shape comments: B = Batch, T = SeqLen,
/// N = B*T tokens, C = channels, NH = heads, V = vocabulary.
/// </summary>
/// <param name="Config">The model.</param>
/// <param name="Batch">Sequences per micro-batch (B).</param>
/// <param name="SeqLen">Tokens per sequence (T).</param>
public sealed record MicroBatch(IModelConfig Config, int Batch, int SeqLen)
{
    /// <summary>Tokens in the micro-batch (N = B*T).</summary>
    public int Tokens => Batch * SeqLen;

    /// <summary>Floats in one activation tensor of shape (N, C) — a layer boundary.</summary>
    public long ActivationLength => (long)Tokens * Config.Channels;

    /// <summary>Throws when the shape does not fit the model.</summary>
    public void Validate()
    {
        if (Batch <= 0)
            throw new ArgumentOutOfRangeException(nameof(Batch), Batch, "The micro-batch must hold at least one sequence.");
        if (SeqLen <= 0 || SeqLen > Config.MaxPositions)
            throw new ArgumentOutOfRangeException(nameof(SeqLen), SeqLen,
                $"Sequence length must be between 1 and the model's maximum positions ({Config.MaxPositions}).");
    }
}
