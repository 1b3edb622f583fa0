// Dropout rates of a model and the per-micro-batch context the layers key their masks by.
namespace L2L.Model.Device;

/// <summary>Drop probabilities in [0, 1): after the embedding, on attention probabilities, on each residual branch.</summary>
/// <param name="Embedding">Hugging Face GPT-2's <c>embd_pdrop</c>: on the embedding's output.</param>
/// <param name="Attention">Hugging Face GPT-2's <c>attn_pdrop</c>: on the attention probabilities.</param>
/// <param name="Residual">Hugging Face GPT-2's <c>resid_pdrop</c>: on each block's attention and MLP outputs before the residual add.</param>
public sealed record DropoutRates(float Embedding, float Attention, float Residual)
{
    /// <summary>No dropout.</summary>
    public static DropoutRates None { get; } = new(0f, 0f, 0f);

    /// <summary>Whether any rate is above zero.</summary>
    public bool Any => Embedding > 0 || Attention > 0 || Residual > 0;

    /// <summary>A description of the problem with the rates, or null.</summary>
    public string? Problem()
    {
        foreach (var (name, p) in new[] { ("embd_pdrop", Embedding), ("attn_pdrop", Attention), ("resid_pdrop", Residual) })
        {
            if (!(p >= 0f && p < 1f))
                return $"{name} must be in [0, 1), got {p}";
        }
        return null;
    }
}

/// <summary>
/// What the layers key dropout masks by for the calls that follow: the rates, the run's seed, the 0-based step and
/// the micro-batch (whose index places its elements within the minibatch, so the masks do not depend on how the
/// minibatch is split). The layer index comes from the layer being run.
/// </summary>
/// <param name="Rates">The drop probabilities.</param>
/// <param name="Seed">The run's seed.</param>
/// <param name="Step">The 0-based training step.</param>
/// <param name="MicroBatch">The 0-based micro-batch within the step.</param>
public readonly record struct DropoutContext(DropoutRates Rates, long Seed, long Step, int MicroBatch);
