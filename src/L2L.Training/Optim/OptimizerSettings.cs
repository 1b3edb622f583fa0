// Which host optimizer to run and its hyper-parameters (PyTorch names and defaults).
namespace L2L.Training.Optim;

/// <summary>The update rules the host optimizer implements.</summary>
public enum OptimizerKind
{
    /// <summary>Plain SGD without momentum: <c>p -= lr * (g + wd * p)</c>, the decay term only where decay applies.</summary>
    Sgd,

    /// <summary>AdamW (Loshchilov and Hutter) as PyTorch's <c>torch.optim.AdamW</c>: decoupled weight decay, bias-corrected moments.</summary>
    AdamW,

    /// <summary>LAMB (You et al. 2019): Adam direction plus weight decay, scaled per slice by the trust ratio <c>||w|| / ||update||</c>.</summary>
    Lamb,
}

/// <summary>Hyper-parameters of a host optimizer.</summary>
/// <param name="Kind">The update rule.</param>
/// <param name="LearningRate">The base learning rate a schedule scales; every <see cref="IHostOptimizer.Step(Span{float}, ReadOnlySpan{float}, Span{float}, Span{Half}, int, float, bool)"/> call receives the rate for that step explicitly.</param>
/// <param name="Beta1">Decay of the first moment (AdamW, LAMB).</param>
/// <param name="Beta2">Decay of the second moment (AdamW, LAMB).</param>
/// <param name="Epsilon">Added to the square root of the bias-corrected second moment (AdamW, LAMB).</param>
/// <param name="WeightDecay">Weight decay coefficient, applied only to slices stepped with <c>decay: true</c>.</param>
public sealed record OptimizerSettings(
    OptimizerKind Kind,
    float LearningRate,
    float Beta1 = 0.9f,
    float Beta2 = 0.999f,
    float Epsilon = 1e-8f,
    float WeightDecay = 0.0f);
